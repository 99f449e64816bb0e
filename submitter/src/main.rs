//! `drover`: the Batch CLI. Parses arguments, calls drover-core, prints results.

mod application;
mod dead_letter;
mod ids;
mod job;
mod job_schedule;
mod node;
mod output;
mod pool;
mod storage;
mod task;

use clap::{CommandFactory, Parser, Subcommand};
use drover_core::Config;
use output::Format;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Azure Batch's workflow on RabbitMQ, Redis and S3",
    after_long_help = EXAMPLES
)]
struct Cli {
    /// Output format (json when stdout is not a terminal).
    #[arg(short = 'o', long = "output", value_enum, global = true, display_order = 900, overrides_with = "output")]
    output: Option<Format>,
    // Last among the flags: its help heading holds for the flags declared after it.
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload and download files in S3-compatible storage.
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// Create, show, list and delete pools.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Create, watch, terminate and delete jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Jobs made again and again (Azure's job schedules), by drover-monitor.
    #[command(subcommand)]
    JobSchedule(job_schedule::JobScheduleCommand),
    /// Add, show and list tasks; download their files.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// A pool's compute nodes (its workers) and what they run.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Versioned application packages for tasks and start tasks.
    #[command(subcommand)]
    Application(application::ApplicationCommand),
    /// Messages that could not be run (not a task, or delivered too often).
    #[command(subcommand)]
    DeadLetter(dead_letter::DeadLetterCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(hide = true)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write drover's man pages (drover.1, drover-job-wait.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1 (created if needed).
        dir: std::path::PathBuf,
    },
}

const EXAMPLES: &str = "The main job (README.md, \"Using it\", from the repository's root after scripts/demo.sh):
  drover storage upload scripts/sample-data s3://drover/demo/
  drover pool create --pool-id books --task-slots-per-node 4
  drover-worker --pool-id books --work-dir target/nodes &       # on every node
  drover job create --job-id run1 --pool-id books
  drover task create --job-id run1 --json-file scripts/sample-data/tasks.jsonl
  drover job wait --job-id run1
  drover storage download s3://drover/demo/output/run1 ./results

Every command takes -o json|table (json when stdout is not a terminal). Exit status: 0 success;
1 a failed job or a refused request (one line on stderr naming the field or id at fault);
2 a usage error. Completions: drover completions bash > /etc/bash_completion.d/drover;
man pages: drover man /usr/local/share/man/man1.";

/// Prints completions or writes man pages: what needs no service.
fn generate(command: &Command) -> Option<anyhow::Result<()>> {
    match command {
        Command::Completions { shell } => {
            // Into a buffer: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "drover", &mut script);
            Some(std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(|e| anyhow::anyhow!("stdout: {e}")))
        }
        Command::Man { dir } => Some(
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display())),
        ),
        _ => None,
    }
}

/// A failed job or task: exit 1 without an error message of its own.
#[derive(Debug)]
pub(crate) struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}
impl std::error::Error for Failed {}

#[tokio::main]
async fn main() -> ExitCode {
    drover_core::telemetry::init("warn");
    let cli = Cli::parse();
    let format = Format::resolve(cli.output);
    let result = match (generate(&cli.command), cli.config.validate()) {
        (Some(done), _) => done,
        (None, Err(e)) => Err(e.into()),
        (None, Ok(())) => match cli.command {
            Command::Storage(c) => storage::run(&cli.config, format, c).await,
            Command::Pool(c) => pool::run(&cli.config, format, c).await,
            Command::Job(c) => job::run(&cli.config, format, c).await,
            Command::JobSchedule(c) => job_schedule::run(&cli.config, format, c).await,
            Command::Task(c) => task::run(&cli.config, format, c).await,
            Command::Node(c) => node::run(&cli.config, format, c).await,
            Command::Application(c) => application::run(&cli.config, format, c).await,
            Command::DeadLetter(c) => dead_letter::run(&cli.config, format, c).await,
            Command::Completions { .. } | Command::Man { .. } => Ok(()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Failed>() => ExitCode::from(1),
        Err(e) => {
            let msg = e.to_string();
            eprintln!("drover: {}", msg.lines().next().unwrap_or(""));
            ExitCode::from(1)
        }
    }
}

/// Reads a JSON file holding Azure's `kind` into `T` as `az` reads it (`model::lenient`): every
/// problem is named at once with its line and column; a field kept without effect is noted on
/// stderr.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path, kind: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--json-file {}: {e}", path.display()))?;
    let (read, notes) = drover_core::model::lenient::read_checked(kind, &text, Some((1, 1)))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for note in notes {
        tracing::warn!("{}: {note}", path.display());
    }
    Ok(read)
}

/// A JSON file of changes (a job patch, a task update), read whole; a leading BOM is skipped.
pub(crate) fn read_json_value(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--json-file {shown}: {e}"))?;
    serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| anyhow::anyhow!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command says what it does and every argument what it takes.
    #[test]
    fn every_command_and_argument_is_described() {
        fn check(cmd: &clap::Command, path: &str) {
            assert!(cmd.get_about().is_some(), "`{path}` has no description");
            for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                assert!(arg.get_help().is_some(), "`{path}`: {} has no description", arg.get_id());
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        check(&cmd, "drover");
        Cli::command().debug_assert();
    }
}
