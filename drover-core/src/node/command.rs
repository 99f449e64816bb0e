//! Running one command on the node, the same way for a task's attempt, the pool's start task and
//! a job's preparation and release tasks: a fresh directory, its resource files and application
//! packages, the environment Azure Batch defines, and a process in its own group, with stdout.txt
//! and stderr.txt beside its working directory and a wall-clock limit.

use super::process::{self, Exit, ProcessSpec};
use super::users::TaskUser;
use super::NodeContext;
use crate::model::task::{ApplicationPackageReference, FailureCode, FailureInfo, ResourceFile};
use crate::model::{EnvironmentSetting, RunAs, UserIdentity};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A command to run, and on whose behalf.
pub(super) struct Command<'a> {
    pub(super) command_line: &'a str,
    pub(super) resource_files: &'a [ResourceFile],
    pub(super) packages: &'a [ApplicationPackageReference],
    /// The job's environment settings, then the command's own (which win).
    pub(super) job_env: &'a [EnvironmentSetting],
    pub(super) own_env: &'a [EnvironmentSetting],
    /// The job and task it runs for (None for a start task; no task for preparation and release).
    pub(super) job: Option<&'a str>,
    pub(super) task: Option<&'a str>,
    /// The job preparation task's working directory, for the job's other commands.
    pub(super) prep_wd: Option<PathBuf>,
    /// Its directory: `wd/` (the working directory), `stdout.txt`, `stderr.txt`.
    pub(super) dir: PathBuf,
    pub(super) wall_clock: Option<Duration>,
    /// Who it runs as (`userIdentity`; None: a non-admin auto-user of pool scope).
    pub(super) identity: Option<&'a UserIdentity>,
    /// Whether it gets a token for its job's operations in the Batch API
    /// (`authenticationTokenSettings`).
    pub(super) job_token: bool,
}

/// A command whose directory, files and packages are in place.
pub(super) struct Staged {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    wd: PathBuf,
    stdout: std::fs::File,
    stderr: std::fs::File,
    wall_clock: Option<Duration>,
    /// A start task's background processes outlive it (services it starts for the node);
    /// every other command ends with its process group.
    keep_background: bool,
    /// The user it runs as (None: the worker's), and its directory.
    user: Option<TaskUser>,
    dir: PathBuf,
    /// Not a task's: a start, preparation or release task's directory, which tasks read.
    shared: bool,
    /// Bytes downloaded for it (resource files, packages).
    pub(super) staged_in: u64,
}

/// How a command ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// Its process exited by itself with this code (128 + n for a death by signal n).
    Exited(i32),
    /// It ran past its wall-clock limit and was killed.
    TimedOut,
    /// It was stopped (its `kill` token was cancelled).
    Killed,
    /// It could not be started.
    NotStarted(FailureInfo),
    /// Its exit is unknown (the task spawner ended before it did); it was killed.
    Lost,
}

impl Ended {
    /// The failure to record; None for exit code 0 and for a command that was stopped.
    pub(super) fn failure(&self) -> Option<FailureInfo> {
        match self {
            Ended::Exited(0) | Ended::Killed => None,
            Ended::Exited(code) => {
                Some(FailureInfo::user(FailureCode::FailureExitCode, format!("the command exited with code {code}")))
            }
            Ended::TimedOut => Some(FailureInfo::user(
                FailureCode::MaxWallClockTimeExceeded,
                "the command ran past its maxWallClockTime and was killed",
            )),
            Ended::NotStarted(f) => Some(f.clone()),
            Ended::Lost => Some(FailureInfo::server(
                FailureCode::CommandStartError,
                "the node's task spawner ended before the command did: its exit is unknown",
            )),
        }
    }

    /// The exit code, when the process exited by itself.
    pub(super) fn exit_code(&self) -> Option<i32> {
        match self {
            Ended::Exited(code) => Some(*code),
            _ => None,
        }
    }
}

impl Command<'_> {
    /// The working directory.
    pub(super) fn wd(&self) -> PathBuf {
        self.dir.join("wd")
    }

    /// Makes a fresh directory and, when `stage`, downloads the resource files and installs the
    /// packages. Err holds the failure and the bytes downloaded until then.
    pub(super) async fn stage(&self, ctx: &NodeContext, stage: bool) -> Result<Staged, (FailureInfo, u64)> {
        let wd = self.wd();
        let run_as = UserIdentity::run_as(self.identity, &ctx.user_accounts)
            .map_err(|e| (FailureInfo::user(FailureCode::CommandStartError, e), 0))?;
        // Nothing to stage: the directory, the command's user and its ownership in one trip to
        // the blocking pool; else the user takes the directory once the files are in it.
        let owner = (!stage).then(|| self.owner(ctx, run_as.clone()));
        let (stdout, stderr, early_user) = fresh_dir(&self.dir, &wd, owner).await.map_err(|e| (e, 0))?;
        let mut staged_in = 0;
        let mut env = self.environment(ctx, &wd);
        if stage {
            // The downloads' futures are boxed: kilobytes (an S3 request's), which every
            // command's future would otherwise hold, and copy at each await, staging or not.
            for (i, rf) in self.resource_files.iter().enumerate() {
                let limit = ctx.options.max_task_download_bytes.map_or(u64::MAX, |m| m.saturating_sub(staged_in));
                let (staging, rf, into) = (ctx.staging.clone(), rf.clone(), wd.clone());
                match Box::pin(ctx.transfer(async move { staging.stage_in(&rf, &into, limit).await })).await {
                    Ok(n) => staged_in += n,
                    Err(e) => {
                        let failure = FailureInfo::user(
                            FailureCode::ResourceFileDownloadError,
                            format!("resourceFiles[{i}]: {e}"),
                        );
                        return Err((failure, staged_in));
                    }
                }
            }
            env.extend(Box::pin(super::packages::install(ctx, self.packages)).await.map_err(|f| (f, staged_in))?);
        }
        let argv = match shell_words::split(self.command_line) {
            Ok(a) if !a.is_empty() => a,
            _ => {
                let failure =
                    FailureInfo::user(FailureCode::CommandLineInvalid, "commandLine cannot be split into words");
                return Err((failure, staged_in));
            }
        };
        let user = match early_user {
            Some(user) => user,
            None => self.user(ctx, run_as).await.map_err(|f| (f, staged_in))?,
        };
        if user.is_some() {
            env.retain(|(k, _)| k != "HOME");
            env.push(("HOME".into(), wd.to_string_lossy().into_owned()));
        }
        let keep_background = self.job.is_none();
        let (dir, shared) = (self.dir.clone(), self.task.is_none());
        Ok(Staged {
            argv,
            env,
            wd,
            stdout,
            stderr,
            wall_clock: self.wall_clock,
            keep_background,
            user,
            dir,
            shared,
            staged_in,
        })
    }

    /// What makes the command's directory its user's: the user to acquire, and the mode (a
    /// task's private, 0700; a start, preparation or release task's readable by the node's
    /// tasks, 0755).
    fn owner(&self, ctx: &NodeContext, run_as: RunAs) -> Owner {
        let mode = if self.task.is_some() { 0o700 } else { 0o755 };
        Owner {
            users: ctx.users.clone(),
            run_as,
            account: ctx.config.account.clone(),
            pool: ctx.options.pool_id.clone(),
            mode,
        }
    }

    /// The user the command runs as, its directory made its own (once its files are staged).
    async fn user(&self, ctx: &NodeContext, run_as: RunAs) -> Result<Option<TaskUser>, FailureInfo> {
        let (owner, dir) = (self.owner(ctx, run_as), self.dir.clone());
        tokio::task::spawn_blocking(move || owner.take(&dir, None))
            .await
            .unwrap_or_else(|e| Err(FailureInfo::server(FailureCode::TaskDirectoryError, e.to_string())))
    }

    /// Stages and runs the command to its end (a start, preparation or release task).
    pub(super) async fn run(&self, ctx: &NodeContext, kill: &CancellationToken) -> Ended {
        match self.stage(ctx, true).await {
            Ok(staged) => staged.run(ctx, kill).await,
            Err((failure, _)) => Ended::NotStarted(failure),
        }
    }

    /// The command's environment: the job's settings, then its own (which win), then the node's
    /// variables under drover's and Azure's names.
    fn environment(&self, ctx: &NodeContext, wd: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for e in self.job_env.iter().chain(self.own_env) {
            env.retain(|(k, _)| *k != e.name);
            env.push((e.name.clone(), e.value.clone()));
        }
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let ours = [
            ("TASK_ID", self.task.map(str::to_string)),
            ("JOB_ID", self.job.map(str::to_string)),
            ("POOL_ID", Some(ctx.options.pool_id.clone())),
            ("NODE_ID", Some(ctx.options.node_id.clone())),
            ("TASK_WORKING_DIR", Some(path(wd))),
            ("TASK_DIR", Some(path(&self.dir))),
            ("JOB_PREP_WORKING_DIR", self.prep_wd.as_deref().map(path)),
        ];
        for (name, value) in ours {
            if let Some(value) = value {
                env.push((format!("DROVER_{name}"), value.clone()));
                env.push((format!("AZ_BATCH_{name}"), value));
            }
        }
        if let Some(url) = &ctx.options.api_url {
            env.push(("AZ_BATCH_ACCOUNT_URL".into(), url.clone()));
        }
        // A token only the account's keys make, that drover-api accepts for this job alone.
        if let (true, Some(job), Some(signer)) = (self.job_token, self.job, ctx.store.signer()) {
            env.push(("AZ_BATCH_AUTHENTICATION_TOKEN".into(), signer.job_token(job)));
        }
        env
    }
}

impl Staged {
    /// Runs the process to its end, its wall-clock limit, or `kill`.
    pub(super) async fn run(self, ctx: &NodeContext, kill: &CancellationToken) -> Ended {
        self.run_then(ctx, kill, || ()).await.0
    }

    /// [`Staged::run`], then `after` (a few file system calls), with the directory handed back
    /// from the task's user: in one trip to the blocking pool when that walks the directory.
    pub(super) async fn run_then<T: Send + Default + 'static>(
        self,
        ctx: &NodeContext,
        kill: &CancellationToken,
        after: impl FnOnce() -> T + Send + 'static,
    ) -> (Ended, T) {
        let spec = ProcessSpec {
            argv: &self.argv,
            cwd: &self.wd,
            env: &self.env,
            stdout: self.stdout,
            stderr: self.stderr,
            wall_clock: self.wall_clock,
            keep_background: self.keep_background,
            user: self.user.as_ref().map(|u| (u.uid, u.gid)),
            kept_user: self.user.as_ref().is_some_and(TaskUser::kept),
            cgroups: &ctx.cgroups,
            spawner: ctx.spawner.as_ref(),
        };
        let ran = process::run(spec, kill).await;
        let contained = ran.as_ref().is_ok_and(|(_, contained)| *contained);
        // A directory that goes back to the worker is walked whole: on the blocking pool. Else
        // (a task of a kept user, or of the worker's) only `after`'s few calls are left: here,
        // where a trip to the blocking pool would cost more than they do.
        let walks = self.user.as_ref().is_some_and(|u| self.shared || !u.kept());
        let (user, users, dir, shared) = (self.user, ctx.users.clone(), self.dir.clone(), self.shared);
        let finish = move || {
            if let Some(user) = user {
                // What a start, preparation or release task leaves is read by the node's tasks,
                // never written: its directory goes back to the worker.
                if shared {
                    let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
                    if let Err(e) = super::users::chown_tree(&dir, me.0, me.1) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot hand a directory back to the worker");
                    }
                }
                users.release(user, &dir, contained);
            }
            after()
        };
        let after = if walks { tokio::task::spawn_blocking(finish).await.unwrap_or_default() } else { finish() };
        let ended = match ran.map(|(exit, _)| exit) {
            Ok(Exit::Code(code)) => Ended::Exited(code),
            Ok(Exit::TimedOut) => Ended::TimedOut,
            Ok(Exit::Killed) => Ended::Killed,
            Ok(Exit::Lost) => Ended::Lost,
            Err(e) => Ended::NotStarted(FailureInfo::user(
                FailureCode::CommandStartError,
                format!("cannot start {:?}: {e}", self.argv.first().map_or("", String::as_str)),
            )),
        };
        (ended, after)
    }
}

/// Who takes a command's directory, and how (see [`Command::owner`]).
struct Owner {
    users: super::users::Users,
    run_as: RunAs,
    account: String,
    pool: String,
    mode: u32,
}

impl Owner {
    /// Acquires the user and gives it `dir` (blocking): everything beneath it, or, when `fresh`
    /// holds what [`fresh_dir`] just made in it (its `wd`, stdout and stderr), only those. A
    /// failure leaves no user taken.
    fn take(self, dir: &Path, fresh: Option<(&Path, &[&std::fs::File; 2])>) -> Result<Option<TaskUser>, FailureInfo> {
        let refused = |e: String| FailureInfo::user(FailureCode::CommandStartError, e);
        let user = self
            .users
            .acquire(&self.run_as, &self.account, &self.pool)
            .map_err(|e| refused(format!("userIdentity: {e}")))?;
        let Some(user) = user else { return Ok(None) };
        let owned = (|| {
            use std::os::unix::fs::PermissionsExt;
            match fresh {
                Some((wd, files)) => {
                    for path in [dir, wd] {
                        std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))?;
                    }
                    for file in files {
                        std::os::unix::fs::fchown(file, Some(user.uid), Some(user.gid))?;
                    }
                }
                None => super::users::chown_tree(dir, user.uid, user.gid)?,
            }
            // [`fresh_dir`] made it with its mode, which the umask cuts only of group or other
            // bits; a directory staged into first was made without it.
            if fresh.is_none() || self.mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.mode))?;
            }
            // The job's directory: passable, not listable.
            match dir.parent() {
                Some(job_dir) => std::fs::set_permissions(job_dir, std::fs::Permissions::from_mode(0o711)),
                None => Ok(()),
            }
        })();
        match owned {
            Ok(()) => Ok(Some(user)),
            Err(e) => {
                self.users.release(user, dir, true); // nothing ran as it
                Err(FailureInfo::server(FailureCode::TaskDirectoryError, format!("{}: {e}", dir.display())))
            }
        }
    }
}

/// What [`fresh_dir`] gives: the command's stdout.txt and stderr.txt, open for writing, and its
/// user when an owner took the directory.
type Fresh = (std::fs::File, std::fs::File, Option<Option<TaskUser>>);

/// A fresh directory for a run, with its stdout.txt and stderr.txt open for writing, and given
/// to its user by `owner` when there is one. Most attempts are first ones, whose directory is
/// new: a handful of calls, made here, where a trip to the blocking pool would cost more than
/// they do. What an earlier attempt left is removed on the blocking pool, the rest in that trip.
async fn fresh_dir(dir: &Path, wd: &Path, owner: Option<Owner>) -> Result<Fresh, FailureInfo> {
    let failed = |e| dir_failed(wd, e);
    // The directory (with its owner's mode), then `wd` in it: two calls where create_dir_all(wd)
    // makes three.
    let mode = owner.as_ref().filter(|o| o.users.switches(&o.run_as)).map(|o| o.mode);
    match make_dir(dir, mode) {
        Ok(()) => {}
        // The job's first command on this node.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            dir.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| make_dir(dir, mode)).map_err(failed)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let (dir, wd) = (dir.to_path_buf(), wd.to_path_buf());
            return tokio::task::spawn_blocking(move || {
                std::fs::remove_dir_all(&dir).and_then(|()| make_dir(&dir, mode)).map_err(|e| dir_failed(&wd, e))?;
                fill(&dir, &wd, owner)
            })
            .await
            .unwrap_or_else(|e| Err(FailureInfo::server(FailureCode::TaskDirectoryError, e.to_string())));
        }
        Err(e) => return Err(failed(e)),
    }
    fill(dir, wd, owner)
}

/// Makes directory `dir` in an existing one, with `mode` (less the umask) when given.
fn make_dir(dir: &Path, mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    if let Some(mode) = mode {
        builder.mode(mode);
    }
    builder.create(dir)
}

/// Makes `wd`, stdout.txt and stderr.txt in the new directory `dir` and gives them to `owner`'s
/// user.
fn fill(dir: &Path, wd: &Path, owner: Option<Owner>) -> Result<Fresh, FailureInfo> {
    let failed = |e| dir_failed(wd, e);
    std::fs::create_dir(wd).map_err(failed)?;
    let stdout = std::fs::File::create(dir.join("stdout.txt")).map_err(failed)?;
    let stderr = std::fs::File::create(dir.join("stderr.txt")).map_err(failed)?;
    let user = owner.map(|o| o.take(dir, Some((wd, &[&stdout, &stderr])))).transpose()?;
    Ok((stdout, stderr, user))
}

/// The failure of a command whose directory (its working directory `wd`) cannot be made.
fn dir_failed(wd: &Path, e: std::io::Error) -> FailureInfo {
    FailureInfo::server(FailureCode::TaskDirectoryError, format!("{}: {e}", wd.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_directory_holds_nothing_an_earlier_attempt_left() {
        let root = std::env::temp_dir().join(format!("drover-fresh-{}", std::process::id()));
        let (dir, wd) = (root.join("job/task"), root.join("job/task/wd"));
        // The first attempt: neither the job's directory nor the task's exists.
        let (mut out, _, user) = fresh_dir(&dir, &wd, None).await.unwrap();
        assert!(wd.is_dir() && user.is_none());
        std::io::Write::write_all(&mut out, b"first").unwrap();
        std::fs::write(wd.join("left"), "by the first attempt").unwrap();
        // A retry on the same node: what the first attempt left goes.
        fresh_dir(&dir, &wd, None).await.unwrap();
        assert!(wd.is_dir() && !wd.join("left").exists());
        assert_eq!(std::fs::metadata(dir.join("stdout.txt")).unwrap().len(), 0);
        // A link planted where the directory goes is removed, not followed.
        let outside = root.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("kept"), "").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, &dir).unwrap();
        fresh_dir(&dir, &wd, None).await.unwrap();
        assert!(!std::fs::symlink_metadata(&dir).unwrap().file_type().is_symlink());
        assert!(outside.join("kept").exists() && !outside.join("wd").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
