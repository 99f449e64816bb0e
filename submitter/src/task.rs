//! `drover task ...`

use crate::ids::{JobId, TaskId};
use crate::output::{self, Format};
use drover_core::model::{TaskAddParameter, TaskState};
use drover_core::queue::{Publisher, Topology};
use drover_core::staging::Staging;
use drover_core::status::StatusStore;
use drover_core::submit::Submission;
use drover_core::Config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub(crate) enum TaskCommand {
    /// Add a task (--task-id with --command-line), or every task of a JSON file (all or none).
    #[command(after_long_help = CREATE_EXAMPLES, group = clap::ArgGroup::new("spec").required(true))]
    Create {
        /// The job to add the tasks to.
        #[arg(long, value_name = "JOB")]
        job_id: String,
        /// The new task's id, unique within the job (letters, digits, '-' and '_'; at most 64).
        #[arg(long, value_name = "TASK", group = "spec", requires = "command_line")]
        task_id: Option<String>,
        /// What the task runs: split into words and run without a shell (use /bin/sh -c '...'
        /// for pipes and variables).
        #[arg(long, value_name = "CMD", requires = "task_id", conflicts_with = "json_file")]
        command_line: Option<String>,
        /// One TaskAddParameter, a JSON array, Azure's {"value":[...]} collection, or JSON Lines;
        /// the fields are listed in README.md, section "Task files".
        #[arg(long, value_name = "FILE", group = "spec")]
        json_file: Option<PathBuf>,
        /// Add the valid tasks of the file and report the bad ones, instead of adding none.
        #[arg(long, requires = "json_file")]
        continue_on_error: bool,
    },
    /// Show one task.
    Show(TaskId),
    /// List a job's tasks (table columns: state, exit code, result, failure code, retries, node).
    #[command(after_long_help = LIST_EXAMPLES)]
    List {
        #[command(flatten)]
        job: JobId,
        /// Only tasks in this state: active, preparing, running or completed.
        #[arg(long)]
        state: Option<String>,
    },
    /// Terminate a task: a running one is killed, one not started never runs. It ends
    /// `completed` with failureInfo code TaskTerminated.
    Terminate(TaskId),
    /// Delete a task and its record (a running one is terminated first).
    Delete(TaskId),
    /// Run a task that completed with a failure again, its retry count reset.
    Reactivate(TaskId),
    /// Change a task's constraints (Azure's task update: a JSON file {"constraints": {...}};
    /// none given: the job's apply). A running attempt keeps the limits it started with.
    Update {
        #[command(flatten)]
        task: TaskId,
        /// The new constraints, as JSON: {"constraints": {"maxTaskRetryCount": 3}}.
        #[arg(long, value_name = "FILE")]
        json_file: PathBuf,
    },
    /// A task's files.
    #[command(subcommand)]
    File(FileCommand),
}

#[derive(clap::Subcommand)]
pub(crate) enum FileCommand {
    /// Download one of a task's files: stdout.txt and stderr.txt (what it has written so far
    /// while it runs, the copy kept in storage once it ended), or any file of its directory
    /// (wd/...) while its node keeps it.
    #[command(after_long_help = DOWNLOAD_EXAMPLES)]
    Download {
        #[command(flatten)]
        task: TaskId,
        /// The file's path in the task's directory: stdout.txt, stderr.txt, wd/...
        #[arg(long, value_name = "FILE")]
        file_path: String,
        /// The local file to write (created or replaced).
        #[arg(long, value_name = "PATH")]
        destination: PathBuf,
    },
    /// List a task's files: its directory on its node while the node keeps it, else the kept
    /// stdout.txt and stderr.txt.
    List {
        #[command(flatten)]
        task: TaskId,
        /// Every level of the directory, not only its top.
        #[arg(long)]
        recursive: bool,
    },
    /// Delete one of a task's files (on its node, and the kept copy of stdout.txt or stderr.txt).
    Delete {
        #[command(flatten)]
        task: TaskId,
        /// The file's path in the task's directory.
        #[arg(long, value_name = "FILE")]
        file_path: String,
        /// Delete a directory with everything in it.
        #[arg(long)]
        recursive: bool,
    },
}

/// The columns of a table of files.
pub(crate) const FILE_COLUMNS: [&str; 4] =
    ["name", "isDirectory", "properties.contentLength", "properties.lastModified"];

const CREATE_EXAMPLES: &str = "Examples:
  drover task create --job-id frames --task-id f0001 --command-line \"/bin/sh -c 'echo hello > out.txt'\"
  drover task create --job-id frames --json-file tasks.jsonl     # one task per line
  drover task create --job-id frames --json-file tasks.json --continue-on-error";

const LIST_EXAMPLES: &str = "Examples:
  drover task list --job-id frames -o table
  drover task list --job-id frames --state completed -o table   # failure codes and exit codes";

const DOWNLOAD_EXAMPLES: &str = "Example:
  drover task file download --job-id frames --task-id f0001 --file-path stderr.txt --destination f0001.err";

pub(crate) async fn run(config: &Config, format: Format, cmd: TaskCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        TaskCommand::Create { job_id, task_id, command_line, json_file, continue_on_error } => {
            let publisher = Publisher::connect(&config.broker(), Topology::new(&config.account)).await?;
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {pos} tasks added ({per_sec})")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar
            });
            let progress = |n: usize| {
                if let Some(bar) = &bar {
                    bar.set_position(n as u64);
                }
            };
            let mut submission = Submission {
                store: &store,
                publisher: &publisher,
                job_id: &job_id,
                continue_on_error,
                progress: &progress,
            };
            let report = match (json_file, task_id, command_line) {
                (Some(path), _, _) => submission.add_file(&path).await?,
                (None, Some(id), Some(command_line)) => {
                    let task: TaskAddParameter =
                        serde_json::from_value(serde_json::json!({"id": id, "commandLine": command_line}))?;
                    submission.add(&[task]).await?
                }
                _ => anyhow::bail!("give --task-id with --command-line, or --json-file"),
            };
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            publisher.close().await;
            for (id, reason) in &report.skipped {
                eprintln!("drover: skipped task {id}: {reason}");
            }
            output::one(format, &report)
        }
        TaskCommand::Show(TaskId { job_id, task_id }) => output::one(format, &store.get_task(&job_id, &task_id).await?),
        TaskCommand::List { job: JobId { job_id }, state } => {
            let state = state.map(|s| TaskState::parse(&s)).transpose().map_err(|e| anyhow::anyhow!("--{e}"))?;
            let mut tasks = Vec::new();
            store
                .for_each_task(&job_id, state, |t| {
                    tasks.push(t);
                    std::ops::ControlFlow::Continue(())
                })
                .await?;
            output::list(
                format,
                &tasks,
                &[
                    "id",
                    "state",
                    "executionInfo.exitCode",
                    "executionInfo.result",
                    "executionInfo.failureInfo.code",
                    "executionInfo.retryCount",
                    "nodeInfo.nodeId",
                ],
            )
        }
        TaskCommand::Update { task: TaskId { job_id, task_id }, json_file } => {
            let shown = json_file.display();
            let change = crate::read_json_value(&json_file)?;
            drover_core::actions::update_task(&store, &job_id, &task_id, &change)
                .await
                .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            output::one(format, &store.get_task(&job_id, &task_id).await?)
        }
        TaskCommand::Terminate(TaskId { job_id, task_id }) => {
            let wait = Duration::from_secs(30);
            if !drover_core::actions::terminate_task(&publisher(config), &store, &job_id, &task_id, wait).await? {
                anyhow::bail!("task {task_id:?}: its node has not killed it within 30 s; it will when it next checks");
            }
            output::one(format, &store.get_task(&job_id, &task_id).await?)
        }
        TaskCommand::Delete(TaskId { job_id, task_id }) => {
            drover_core::actions::delete_task(&publisher(config), &store, &job_id, &task_id, Duration::from_secs(30))
                .await?;
            output::one(format, &serde_json::json!({"jobId": job_id, "taskId": task_id, "deleted": true}))
        }
        TaskCommand::Reactivate(TaskId { job_id, task_id }) => {
            drover_core::actions::reactivate_task(&publisher(config), &store, &job_id, &task_id).await?;
            output::one(format, &store.get_task(&job_id, &task_id).await?)
        }
        TaskCommand::File(FileCommand::Download { task: TaskId { job_id, task_id }, file_path, destination }) => {
            let staging = Staging::new(config).await?;
            let read = drover_core::actions::task_file(&staging, &store, &job_id, &task_id, &file_path, None).await;
            save(read.map_err(|e| anyhow::anyhow!("--file-path {file_path:?}: {e}"))?, &destination).await
        }
        TaskCommand::File(FileCommand::List { task: TaskId { job_id, task_id }, recursive }) => {
            let staging = Staging::new(config).await?;
            let files = drover_core::actions::list_task_files(&staging, &store, &job_id, &task_id, recursive).await?;
            let shown: Vec<_> = files.iter().map(|f| f.to_azure(None)).collect();
            output::list(format, &shown, &FILE_COLUMNS)
        }
        TaskCommand::File(FileCommand::Delete { task: TaskId { job_id, task_id }, file_path, recursive }) => {
            let staging = Staging::new(config).await?;
            drover_core::actions::delete_task_file(&staging, &store, &job_id, &task_id, &file_path, recursive)
                .await
                .map_err(|e| anyhow::anyhow!("--file-path {file_path:?}: {e}"))?;
            output::one(format, &serde_json::json!({"jobId": job_id, "taskId": task_id, "deleted": file_path}))
        }
    }
}

/// Writes a file read to `destination` (created or replaced).
pub(crate) async fn save(
    mut read: drover_core::node_files::FileRead,
    destination: &std::path::Path,
) -> anyhow::Result<()> {
    let shown = destination.display();
    let mut file =
        tokio::fs::File::create(destination).await.map_err(|e| anyhow::anyhow!("--destination {shown}: {e}"))?;
    tokio::io::copy(&mut read.body, &mut file).await.map_err(|e| anyhow::anyhow!("--destination {shown}: {e}"))?;
    Ok(())
}

/// A publisher for what a command's transition makes runnable: it connects only if there is
/// something to publish.
fn publisher(config: &Config) -> Publisher {
    Publisher::new(&config.broker(), "drover", Topology::new(&config.account))
}
