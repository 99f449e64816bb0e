//! Running a task's process: its own process group and cgroup, stdout/stderr to files, a
//! wall-clock limit.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited by itself (a signal death is reported as 128 + the signal number).
    Code(i32),
    /// It ran past its wall-clock limit and its process group was killed.
    TimedOut,
    /// It was killed because the node is leaving or the task was terminated.
    Killed,
}

/// What to run and where.
pub(super) struct ProcessSpec<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
    pub wall_clock: Option<Duration>,
    /// Leave what the process started in the background running after it exits.
    pub keep_background: bool,
    /// The uid and gid it runs as (None: the worker's).
    pub user: Option<(u32, u32)>,
    pub cgroups: &'a super::cgroups::Cgroups,
}

/// Environment variables passed through from the node to tasks; everything else (credentials in
/// particular) stays out of the task's environment.
const PASS_THROUGH: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR"];

/// The program a command names, as its own exec would find it: a path as it is, a bare name on
/// the PATH the command gets. Not found is an error (the command could not be started).
fn resolve(program: &Path, env: &[(String, String)]) -> std::io::Result<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return Ok(program.to_path_buf());
    }
    let own = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| std::ffi::OsString::from(v));
    let path = own.or_else(|| std::env::var_os("PATH")).unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"))
}

/// Runs the process to its end, its limit, or `stop`, and says whether its cgroup ended all it
/// started (false without cgroups, or when its background may stay). An error means it could not
/// be started.
pub(super) async fn run(spec: ProcessSpec<'_>, stop: &CancellationToken) -> std::io::Result<(Exit, bool)> {
    let program = &spec.argv[0];
    // A relative program path is relative to the working directory, as in Azure Batch.
    let program: PathBuf = if program.contains('/') && !program.starts_with('/') {
        spec.cwd.join(program)
    } else {
        PathBuf::from(program)
    };
    // A path, so that std spawns with posix_spawn (vfork) when the command keeps the worker's
    // user (a bare name with PATH set in its environment makes std fork, copying the worker's
    // page tables). As another user std forks anyway: it has to switch users in the child.
    let mut cmd = tokio::process::Command::new(resolve(&program, spec.env)?);
    cmd.args(&spec.argv[1..])
        .current_dir(spec.cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(spec.stdout))
        .stderr(Stdio::from(spec.stderr))
        .process_group(0)
        .kill_on_drop(true);
    for name in PASS_THROUGH {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    if let Some((uid, gid)) = spec.user {
        // As root, std also drops every supplementary group before switching.
        cmd.uid(uid).gid(gid).env("USER", format!("drover{uid}")).env("LOGNAME", format!("drover{uid}"));
    }
    let (mut child, group) = spec.cgroups.spawn(|| cmd.spawn(), tokio::process::Child::id)?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let limit = async {
        match spec.wall_clock {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = child.wait() => {
            use std::os::unix::process::ExitStatusExt;
            let status = status?;
            Exit::Code(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        _ = limit => Exit::TimedOut,
        _ = stop.cancelled() => Exit::Killed,
    };
    // The command ends with its process group and its cgroup: what it left running in the
    // background goes too (unless it may stay), whether it left the group or not.
    let keep = spec.keep_background && matches!(ended, Exit::Code(_));
    if let Some(pgid) = pgid.filter(|_| !keep) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.wait().await;
    let contained = group.is_some() && !keep;
    match group {
        Some(group) if keep => group.keep(),
        group => drop(group),
    }
    Ok((ended, contained))
}
