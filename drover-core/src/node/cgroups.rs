//! Task cgroups: every command runs in a cgroup (v2) of its own, so when it ends every process it
//! started ends with it, those that left its process group or session included.
//!
//! The worker moves itself into `<its cgroup>/drover-<pid>` and makes each command's cgroup
//! beneath it. A child starts in its parent's cgroup, so the worker spawns and moves each child
//! under one lock and then moves whatever else is left in its own cgroup (what the child forked
//! before it was moved) after it: only the worker itself stays there. The task spawner does the
//! same in a cgroup of its own (`spawner`), one command at a time ([`contain`]). Moving a single
//! process is cheap; moving the multi-threaded worker per command would not be. A command's
//! cgroup that is empty when the command ends is kept for a later command (making and removing
//! one costs more CPU than the rest of its handling); one with processes left is killed and
//! removed. Without a writable cgroup v2 hierarchy (no root, or v1 only) commands run without one
//! and the worker says so once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The worker's cgroups, if it has them.
#[derive(Debug)]
pub(crate) struct Cgroups {
    inner: Option<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The worker's own cgroup, holding only the worker.
    own: PathBuf,
    /// Held from a spawn until the child and what it forked are in the child's cgroup.
    spawning: Mutex<()>,
    next: AtomicU64,
    /// Cgroups whose processes were killed but had not all exited yet: removed later.
    dying: Mutex<Vec<PathBuf>>,
    /// Cgroups found empty when their command ended, for the next commands (at most [`FREE`]).
    free: Mutex<Vec<(PathBuf, Files)>>,
    /// The worker's own cgroup's `cgroup.procs`, to read.
    own_procs: std::fs::File,
}

/// A cgroup's files, opened once and kept with it (a command per cgroup would open them again).
#[derive(Debug, Default)]
struct Files {
    /// `cgroup.procs`, to write.
    procs: Option<std::fs::File>,
    /// `cgroup.events`, to read.
    events: Option<std::fs::File>,
}

/// How many emptied cgroups a worker keeps for later commands.
const FREE: usize = 64;

/// The cgroup of one command; dropping it kills what is left in it.
#[derive(Debug)]
pub(crate) struct Group<'a> {
    dir: PathBuf,
    files: Files,
    cgroups: &'a Cgroups,
    /// Left alone when dropped (a start task's background services).
    keep: bool,
}

impl Cgroups {
    /// Moves the worker into a cgroup of its own; without one, commands run without cgroups.
    pub(crate) fn new() -> Cgroups {
        match Inner::new() {
            Ok(inner) => {
                tracing::debug!(cgroup = %inner.own.display(), "commands run in cgroups of their own");
                Cgroups { inner: Some(inner) }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup v2 this worker can write: a process a task starts outside its process group outlives the task");
                Cgroups { inner: None }
            }
        }
    }

    /// Spawns with `spawn` and puts the child, and all it forked meanwhile, in a new cgroup.
    pub(crate) fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid: impl Fn(&T) -> Option<u32>,
    ) -> std::io::Result<(T, Option<Group<'_>>)> {
        let Some(inner) = &self.inner else { return Ok((spawn()?, None)) };
        let Some(group) = self.group() else { return Ok((spawn()?, None)) };
        let mut group = group;
        let _one = inner.spawning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let child = spawn()?;
        if let (Some(first), Some(procs)) = (pid(&child), group.procs()) {
            contain(procs, first, &inner.own_procs, &[std::process::id()]);
        }
        Ok((child, Some(group)))
    }

    /// A new cgroup for a command (None without cgroups, or when it cannot be made or entered).
    pub(crate) fn group(&self) -> Option<Group<'_>> {
        let inner = self.inner.as_ref()?;
        let emptied = inner.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut group = match emptied {
            Some((dir, files)) => Group { dir, files, cgroups: self, keep: false },
            None => {
                let dir = inner.own.join(format!("c{}", inner.next.fetch_add(1, Ordering::Relaxed)));
                if let Err(e) = std::fs::create_dir(&dir) {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "cannot make a command's cgroup");
                    return None;
                }
                Group { dir, files: Files::default(), cgroups: self, keep: false }
            }
        };
        // A command enters it through this file only: a cgroup without it would hold nothing, and
        // its command would end without its process group killed (`process::run`).
        group.procs()?;
        Some(group)
    }

    /// The worker's own cgroup, where each task spawner gets one (None without cgroups).
    pub(crate) fn own(&self) -> Option<&Path> {
        Some(&self.inner.as_ref()?.own)
    }

    /// Kills what is left in the worker's cgroups and removes them (the worker is leaving).
    pub(crate) fn close(&self) {
        let Some(inner) = &self.inner else { return };
        let base = inner.own.parent().map(Path::to_path_buf).unwrap_or_default();
        let _ = std::fs::write(base.join("cgroup.procs"), std::process::id().to_string());
        remove_tree(&inner.own);
    }
}

impl Group<'_> {
    /// Its `cgroup.procs`, open for writing (None: it cannot be opened).
    pub(crate) fn procs(&mut self) -> Option<&std::fs::File> {
        if self.files.procs.is_none() {
            match std::fs::OpenOptions::new().write(true).open(self.dir.join("cgroup.procs")) {
                Ok(file) => self.files.procs = Some(file),
                Err(e) => tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot open a command's cgroup"),
            }
        }
        self.files.procs.as_ref()
    }

    /// Whether any process is in it or beneath it (`cgroup.events`); when unknown, yes.
    fn populated(&mut self) -> bool {
        if self.files.events.is_none() {
            self.files.events = std::fs::File::open(self.dir.join("cgroup.events")).ok();
        }
        let events = self.files.events.as_ref().map(read_from_start).unwrap_or_default();
        !events.lines().any(|l| l == "populated 0")
    }

    /// Leaves what is still running in it alone.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        let Some(inner) = &self.cgroups.inner else { return };
        if self.keep {
            return;
        }
        if !self.populated() {
            let mut free = inner.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if free.len() < FREE {
                // Nothing is left in it, and nothing enters it but the next command.
                free.push((std::mem::take(&mut self.dir), std::mem::take(&mut self.files)));
                return;
            }
        }
        kill(&self.dir);
        let mut dying = inner.dying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        dying.push(self.dir.clone());
        // Killed processes take a moment to exit: a cgroup still busy is removed next time.
        dying.retain(|d| std::fs::remove_dir(d).is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound));
    }
}

impl Inner {
    fn new() -> std::io::Result<Inner> {
        let mount = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .find_map(|l| {
                let (before, after) = l.split_once(" - ")?;
                after.starts_with("cgroup2 ").then(|| before.split(' ').nth(4).map(PathBuf::from))?
            })
            .ok_or_else(|| std::io::Error::other("no cgroup2 file system is mounted"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(|p| p.trim_start_matches('/').to_string()))
            .ok_or_else(|| std::io::Error::other("this process is in no cgroup v2"))?;
        let base = mount.join(own);
        sweep_dead(&base);
        let own = base.join(format!("drover-{}", std::process::id()));
        let described = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
        std::fs::create_dir(&own).map_err(|e| described(&format!("create {}", own.display()), e))?;
        let moved = std::fs::write(own.join("cgroup.procs"), std::process::id().to_string());
        if let Err(e) = moved {
            let _ = std::fs::remove_dir(&own);
            return Err(described(&format!("move into {}", own.display()), e));
        }
        let own_procs = std::fs::File::open(own.join("cgroup.procs"))
            .map_err(|e| described(&format!("open {}/cgroup.procs", own.display()), e))?;
        Ok(Inner {
            own,
            spawning: Mutex::new(()),
            next: AtomicU64::new(0),
            dying: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            own_procs,
        })
    }
}

/// Moves process `first` into the cgroup whose `cgroup.procs` is `procs` (open for writing), then
/// whatever else is in the cgroup whose `cgroup.procs` is `home` (open for reading: what `first`
/// forked before it was moved) but the processes `except`; kills what forks faster than it is
/// moved. The caller spawned `first` in `home` and spawns nothing else there meanwhile.
pub(crate) fn contain(mut procs: &std::fs::File, first: u32, home: &std::fs::File, except: &[u32]) {
    use std::io::Write;
    let mut moving = vec![first];
    for _ in 0..100 {
        for pid in moving.drain(..) {
            // A process that exited meanwhile cannot be moved (ESRCH) and needs not be.
            let _ = procs.write_all(pid.to_string().as_bytes());
        }
        moving = pids(&read_from_start(home)).filter(|p| !except.contains(p)).collect();
        if moving.is_empty() {
            return;
        }
    }
    // Forking faster than it is moved: what is left there is that command's, and dies.
    for pid in moving {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A cgroup file read afresh from its start through a descriptor kept open (empty on an error).
/// A cgroup file is a seq_file, whose read returns every whole line that fits: one that leaves
/// room for a longer line than these files hold reached the end, and no read follows to say so
/// (most reads, of a `cgroup.events` or of a `cgroup.procs` holding one pid, are the only one).
pub(crate) fn read_from_start(file: &std::fs::File) -> String {
    use std::os::unix::fs::FileExt;
    /// Longer than any line of `cgroup.procs` (a pid) or `cgroup.events`.
    const LINE: usize = 64;
    let (mut text, mut buf) = (Vec::new(), [0u8; 4096]);
    while let Ok(n @ 1..) = file.read_at(&mut buf, text.len() as u64) {
        text.extend_from_slice(&buf[..n]);
        if n < buf.len() - LINE {
            break;
        }
    }
    String::from_utf8(text).unwrap_or_default()
}

/// The pids in the text of a `cgroup.procs`.
fn pids(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines().filter_map(|l| l.trim().parse().ok())
}

/// The processes directly in a cgroup.
fn members(dir: &Path) -> Vec<u32> {
    pids(&std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default()).collect()
}

/// Kills every process in a cgroup and beneath it (`cgroup.kill`, or one by one before Linux 5.14).
pub(crate) fn kill(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..100 {
        let pids = members(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Kills and removes a worker's cgroup and its commands' (those still busy are left).
fn remove_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            kill(&entry.path());
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the cgroups of workers that died here, with whatever they left running.
fn sweep_dead(base: &Path) {
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("drover-")).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            remove_tree(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_longer_than_one_read_is_read_whole() {
        let path = std::env::temp_dir().join(format!("drover-procs-{}", std::process::id()));
        let text: String = (100_000..102_000).map(|pid| format!("{pid}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let read = super::read_from_start(&std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read.len(), 14_000);
        assert_eq!(read, text);
    }
}
