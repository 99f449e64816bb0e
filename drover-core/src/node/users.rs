//! Task users: the uid a command runs as. A non-admin command never runs as the worker: an
//! auto-user of pool scope runs as a uid of its account and pool on this host, one of task scope
//! as a uid no other running command has, a pool's userAccount as its configured uid (or one
//! kept for its name). The uids are allocated from 200000 up by files under /run/drover/uids,
//! shared by every worker of the host; a task-scope uid is given back, with every process left
//! under it killed, when its command ends: to the worker's own free list, which the next
//! task-scope command takes it from (no file made and removed per task), and to the host when
//! the worker leaves. A kept uid (pool scope, or a named account's) never changes on a host, so
//! each worker reads it from its file once.

use crate::model::identity::AutoUserScope;
use crate::model::RunAs;
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The first uid (and gid) drover gives a task user, and how many there are.
pub const UID_BASE: u32 = 200_000;
const UID_COUNT: u32 = 50_000;
const DIR: &str = "/run/drover/uids";

/// How this worker runs non-admin commands.
#[derive(Debug, Clone)]
pub enum Users {
    /// As task users (the worker runs as root).
    Switch(Arc<Held>),
    /// As the worker's own user, every one of them: asked for with `--tasks-as-worker-user`.
    AsWorker,
}

/// What a worker that switches users holds.
#[derive(Debug, Default)]
pub struct Held {
    /// Task-scope uids free for the next command, each with its allocation file.
    free: Mutex<Vec<(u32, PathBuf)>>,
    /// The kept uids read so far, by key.
    kept: Mutex<HashMap<String, u32>>,
}

/// A uid a command runs as; one of task scope is given back with [`Users::release`].
#[derive(Debug)]
pub(crate) struct TaskUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// The allocation file of a task-scope uid.
    lease: Option<PathBuf>,
}

impl TaskUser {
    /// Whether it is kept on this host (pool scope, a named account), not one task's.
    pub(crate) fn kept(&self) -> bool {
        self.lease.is_none()
    }
}

impl Users {
    /// Task users when the worker can switch users; an error that says what to do when it
    /// cannot and was not told to run every task as itself.
    pub fn new(as_worker: bool) -> Result<Users> {
        if as_worker {
            tracing::warn!("--tasks-as-worker-user: every task runs as this worker's user, with its rights");
            return Ok(Users::AsWorker);
        }
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(Error::invalid(format!(
                "running as uid {uid}, this worker cannot run tasks as their own non-admin users (Azure's default): run it as root, or pass --tasks-as-worker-user (DROVER_TASKS_AS_WORKER_USER=true) to run every task as uid {uid}"
            )));
        }
        std::fs::create_dir_all(Path::new(DIR).join("by-key")).map_err(|e| Error::io(format!("create {DIR}"), e))?;
        Ok(Users::Switch(Default::default()))
    }

    /// Whether a command that runs as `run_as` gets a user of its own ([`Users::acquire`]).
    pub(crate) fn switches(&self, run_as: &RunAs) -> bool {
        !matches!(self, Users::AsWorker) && !matches!(run_as, RunAs::Worker)
    }

    /// The user a command of `account`'s `pool` that runs as `run_as` gets (None: the worker's).
    pub(crate) fn acquire(&self, run_as: &RunAs, account: &str, pool: &str) -> Result<Option<TaskUser>> {
        if !self.switches(run_as) {
            return Ok(None);
        }
        let user = match run_as {
            RunAs::Worker => return Ok(None),
            RunAs::AutoUser(AutoUserScope::Pool) => self.kept(format!("pool:{account}:{pool}"))?,
            RunAs::AutoUser(AutoUserScope::Task) => {
                let (uid, lease) = match self.take_free() {
                    Some(free) => free,
                    None => claim(&format!("task:{account}:{pool}"))?,
                };
                TaskUser { uid, gid: uid, lease: Some(lease) }
            }
            RunAs::Account { uid: Some(uid), gid, .. } => TaskUser { uid: *uid, gid: gid.unwrap_or(*uid), lease: None },
            RunAs::Account { name, uid: None, gid } => {
                let user = self.kept(format!("user:{account}:{pool}:{name}"))?;
                TaskUser { gid: gid.unwrap_or(user.gid), ..user }
            }
        };
        Ok(Some(user))
    }

    /// Gives back a task-scope user once its command ended: every process still running as it
    /// is killed (already done when its cgroup ended everything, `contained`) and `dir` is handed
    /// back to the worker, so the next holder of the uid reaches nothing of this task.
    pub(crate) fn release(&self, user: TaskUser, dir: &Path, contained: bool) {
        let Some(lease) = user.lease else { return };
        if !contained {
            kill_all(user.uid);
        }
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        if let Err(e) = chown_tree(dir, me.0, me.1) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot hand a task directory back to the worker");
            return; // the uid stays taken rather than reach this directory
        }
        match self {
            Users::Switch(held) if held.free.lock().map(|mut f| f.push((user.uid, lease.clone()))).is_ok() => {}
            _ => {
                let _ = std::fs::remove_file(lease);
            }
        }
    }

    /// A task-scope uid this worker holds free.
    fn take_free(&self) -> Option<(u32, PathBuf)> {
        match self {
            Users::Switch(held) => held.free.lock().ok()?.pop(),
            Users::AsWorker => None,
        }
    }

    /// The uid kept for `key` on this host ([`keyed`]), read once per worker.
    fn kept(&self, key: String) -> Result<TaskUser> {
        let Users::Switch(held) = self else { return keyed(&key) };
        if let Some(&uid) = held.kept.lock().ok().as_ref().and_then(|k| k.get(&key)) {
            return Ok(TaskUser { uid, gid: uid, lease: None });
        }
        let user = keyed(&key)?;
        if let Ok(mut kept) = held.kept.lock() {
            kept.insert(key, user.uid);
        }
        Ok(user)
    }

    /// Gives the task-scope uids this worker holds back to the host (it is leaving).
    pub(crate) fn close(&self) {
        while let Some((_, lease)) = self.take_free() {
            let _ = std::fs::remove_file(lease);
        }
    }
}

/// Claims a free uid, recording `owner` in its allocation file.
fn claim(owner: &str) -> Result<(u32, PathBuf)> {
    let start = owner.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % UID_COUNT;
    for i in 0..UID_COUNT {
        let uid = UID_BASE + (start + i) % UID_COUNT;
        let path = Path::new(DIR).join(uid.to_string());
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(format!("{uid}\n{owner}\n").as_bytes())
                    .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
                return Ok((uid, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
        }
    }
    Err(Error::Internal(format!("no free task user uid left in {UID_BASE}..{}", UID_BASE + UID_COUNT)))
}

/// The uid kept for `key` on this host, claimed the first time.
fn keyed(key: &str) -> Result<TaskUser> {
    let at = Path::new(DIR).join("by-key").join(key);
    let read = |at: &Path| -> Option<u32> { std::fs::read_to_string(at).ok()?.lines().next()?.parse().ok() };
    if let Some(uid) = read(&at) {
        return Ok(TaskUser { uid, gid: uid, lease: None });
    }
    let (uid, lease) = claim(key)?;
    match std::fs::hard_link(&lease, &at) {
        Ok(()) => Ok(TaskUser { uid, gid: uid, lease: None }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another worker kept one for the key meanwhile: use it.
            let _ = std::fs::remove_file(&lease);
            let uid = read(&at).ok_or_else(|| Error::Internal(format!("{} is unreadable", at.display())))?;
            Ok(TaskUser { uid, gid: uid, lease: None })
        }
        Err(e) => Err(Error::io(format!("link {}", at.display()), e)),
    }
}

/// Kills every process whose real or effective uid is `uid` (twice: one may fork meanwhile).
fn kill_all(uid: u32) {
    for _ in 0..2 {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
            let ids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
            if ids.split_whitespace().take(2).any(|id| id == uid.to_string()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Gives `dir` and everything beneath it (links themselves, never what they point to) to
/// `uid:gid`.
pub(crate) fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}
