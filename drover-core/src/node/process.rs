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
    /// The task spawner that started it ended first, so its exit is unknown; it was killed.
    Lost,
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
    /// That user is a kept one (pool scope, a named account), with a task spawner of its own.
    pub kept_user: bool,
    pub cgroups: &'a super::cgroups::Cgroups,
    /// Starts commands as other users (None: the worker forks itself to).
    pub spawner: Option<&'a super::spawner::Spawner>,
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

/// The command's whole environment: the node's pass-through variables, its own, and with a user
/// of its own that user's name.
fn environment(spec: &ProcessSpec<'_>) -> Vec<(String, String)> {
    // The worker's environment does not change while it runs: read once.
    static NODE: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(|| {
        PASS_THROUGH.iter().filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?))).collect()
    });
    let mut env = Vec::with_capacity(node.len() + spec.env.len() + 2);
    env.extend(node.iter().cloned());
    env.extend(spec.env.iter().cloned());
    if let Some((uid, _)) = spec.user {
        env.push(("USER".into(), format!("drover{uid}")));
        env.push(("LOGNAME".into(), format!("drover{uid}")));
    }
    env
}

/// A started command: the worker's own child, or one the task spawner started.
enum Running {
    Here(tokio::process::Child),
    Spawned(super::spawner::Spawned, Option<std::process::ExitStatus>),
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::Here(child) => child.id(),
            Running::Spawned(spawned, _) => Some(spawned.pid),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Running::Here(child) => child.wait().await,
            Running::Spawned(_, Some(status)) => Ok(*status),
            Running::Spawned(spawned, done) => {
                let status = spawned.wait().await?;
                *done = Some(status);
                Ok(status)
            }
        }
    }
}

/// Kills a spawned command's process group if its run is abandoned before it ended (a child of
/// the worker's own is killed on drop by tokio).
struct Abandoned(Option<Pid>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Starts the command through the task spawner, in a cgroup of its own. None: the spawner is
/// gone, and `env` is as it was.
async fn spawn_there<'c>(
    spawner: &super::spawner::Spawner,
    spec: &ProcessSpec<'c>,
    program: &Path,
    env: &mut Vec<(String, String)>,
) -> Option<std::io::Result<(Running, Option<super::cgroups::Group<'c>>)>> {
    let (Some(program), Some(cwd)) = (program.to_str(), spec.cwd.to_str()) else { return None };
    let mut request = super::spawner::Request {
        id: 0,
        program: program.to_string(),
        args: spec.argv[1..].to_vec(),
        cwd: cwd.to_string(),
        env: std::mem::take(env),
        user: spec.user,
    };
    // A kept user's spawner first, then the root one.
    for kept in [true, false] {
        if kept && !spec.kept_user {
            continue;
        }
        let mut group = spec.cgroups.group();
        // Opened by the worker, as root: the spawner (perhaps not root) moves the child through it.
        let procs = group.as_mut().and_then(|g| g.procs());
        if let Some(spawned) = spawner.spawn(&mut request, &spec.stdout, &spec.stderr, procs, kept).await {
            return Some(spawned.map(|s| (Running::Spawned(s, None), group)));
        }
        // That spawner went before it answered: what it started of this command, if anything,
        // dies with this cgroup, dropped here.
    }
    *env = request.env;
    None
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
    let program = resolve(&program, spec.env)?;
    let mut env = environment(&spec);
    // As another user, through the task spawner when there is one (std forks to switch users,
    // and a fork of the spawner is cheap, of the worker not).
    let there = match (spec.spawner, spec.user) {
        (Some(spawner), Some(_)) => spawn_there(spawner, &spec, &program, &mut env).await,
        _ => None,
    };
    let (mut running, group) = match there {
        Some(spawned) => spawned?,
        None => {
            // A path, so that std spawns with posix_spawn (vfork) when the command keeps the
            // worker's user (a bare name with PATH set in its environment makes std fork,
            // copying the worker's page tables). As another user std forks.
            let mut cmd = tokio::process::Command::new(&program);
            cmd.args(&spec.argv[1..])
                .current_dir(spec.cwd)
                .env_clear()
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::from(spec.stdout))
                .stderr(Stdio::from(spec.stderr))
                .process_group(0)
                .kill_on_drop(true);
            if let Some((uid, gid)) = spec.user {
                // As root, std also drops every supplementary group before switching.
                cmd.uid(uid).gid(gid);
            }
            let (child, group) = spec.cgroups.spawn(|| cmd.spawn(), tokio::process::Child::id)?;
            (Running::Here(child), group)
        }
    };
    let pgid = running.pid().map(|id| Pid::from_raw(id as i32));
    let mut abandoned = Abandoned(pgid.filter(|_| matches!(running, Running::Spawned(..))));
    let limit = async {
        match spec.wall_clock {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = running.wait() => {
            use std::os::unix::process::ExitStatusExt;
            match status {
                Ok(status) => Exit::Code(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))),
                Err(e) => {
                    tracing::warn!(error = %e, "a command's exit is unknown: it is killed and its task handed back");
                    Exit::Lost
                }
            }
        }
        _ = limit => Exit::TimedOut,
        _ = stop.cancelled() => Exit::Killed,
    };
    // The command ends with its process group and its cgroup: what it left running in the
    // background goes too (unless it may stay), whether it left the group or not. After an exit,
    // its cgroup (dropped below) ends all it left, so only a command without one, or still
    // running, gets its group killed.
    let exited = matches!(ended, Exit::Code(_));
    let keep = spec.keep_background && exited;
    if let Some(pgid) = pgid.filter(|_| !keep && (!exited || group.is_none())) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    if ended != Exit::Lost {
        let _ = running.wait().await;
    }
    abandoned.0 = None;
    let contained = group.is_some() && !keep;
    match group {
        Some(group) if keep => group.keep(),
        group => drop(group),
    }
    Ok((ended, contained))
}
