//! `drover`: the Batch CLI. Parses arguments, calls drover-core, prints results.

mod application;
mod dead_letter;
mod job;
mod node;
mod output;
mod pool;
mod storage;
mod task;

use clap::{Parser, Subcommand};
use drover_core::Config;
use output::Format;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "drover", version, about = "Azure Batch's workflow on RabbitMQ, Redis and S3")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Output format (json when stdout is not a terminal).
    #[arg(short = 'o', long = "output", value_enum, global = true)]
    output: Option<Format>,
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
    let result = match cli.config.validate() {
        Err(e) => Err(e.into()),
        Ok(()) => match cli.command {
            Command::Storage(c) => storage::run(&cli.config, format, c).await,
            Command::Pool(c) => pool::run(&cli.config, format, c).await,
            Command::Job(c) => job::run(&cli.config, format, c).await,
            Command::Task(c) => task::run(&cli.config, format, c).await,
            Command::Node(c) => node::run(&cli.config, format, c).await,
            Command::Application(c) => application::run(&cli.config, format, c).await,
            Command::DeadLetter(c) => dead_letter::run(&cli.config, format, c).await,
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

/// Reads a JSON file into `T`, naming the file and the position of a syntax error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("--json-file {}: {e}", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
