//! The task spawner: a small helper process that starts commands as other users, so that a
//! switch of user forks a process of a few megabytes rather than the multi-threaded worker.
//!
//! std switches users in a forked child (posix_spawn cannot), and a fork copies the parent's
//! page tables, which the exec then throws away: for a worker that runs short tasks as their
//! own users, most of the node's CPU per task. So `drover-worker` starts its own executable once
//! as the spawner ([`SPAWNER_FLAG`], an empty environment, one end of a Unix socket as its
//! stdin). The worker sends each command (program, arguments, directory, environment, user,
//! cgroup) with its stdout and stderr as descriptors; the spawner starts it, moves it (and what
//! it forked meanwhile) into the command's cgroup, and answers the child's pid, then its wait
//! status when it exits. The spawner exits when the worker closes the socket (or dies). One that
//! ends otherwise is replaced for the worker's next command (at most one every [`RESTART`]);
//! until then the worker starts commands itself.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The argument that makes `drover-worker` the spawner (followed by the spawner's cgroup, if any).
pub const SPAWNER_FLAG: &str = "--task-spawner";

/// The most bytes one command's description may have (a task's JSON is at most 1 MiB).
const MAX_REQUEST: u64 = 8 << 20;

/// A command for the spawner.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    /// Set by [`Spawner::spawn`].
    pub(super) id: u64,
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) cwd: String,
    /// The whole environment (the spawner's own is empty).
    pub(super) env: Vec<(String, String)>,
    /// The uid and gid it runs as.
    pub(super) user: Option<(u32, u32)>,
    /// The cgroup it runs in.
    pub(super) cgroup: Option<PathBuf>,
}

/// The spawner's answers: the child's pid (or why it could not start), then its wait status.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// The OS error number and message of a failed start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<(Option<i32>, String)>,
    /// The raw wait status of an exited child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<i32>,
}

/// Runs the spawner until the worker closes the socket on stdin. `cgroup`: the spawner's own
/// cgroup, where its children start before each is moved into its command's.
pub fn serve(cgroup: Option<PathBuf>) -> std::process::ExitCode {
    let failed = |e: std::io::Error| {
        eprintln!("drover-worker {SPAWNER_FLAG}: {e}");
        std::process::ExitCode::FAILURE
    };
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => return failed(e),
    };
    let replies = match socket.try_clone() {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => return failed(e),
    };
    if let Some(dir) = &cgroup {
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()) {
            return failed(std::io::Error::new(e.kind(), format!("move into {}: {e}", dir.display())));
        }
    }
    let children = Arc::new(Children::default());
    let reaping = (children.clone(), replies.clone());
    if let Err(e) = std::thread::Builder::new().name("reaper".into()).spawn(move || reap(&reaping.0, &reaping.1)) {
        return failed(e);
    }
    loop {
        match receive(&socket) {
            Ok(Some((request, fds))) => start(request, fds, cgroup.as_deref(), &replies, &children),
            Ok(None) => return std::process::ExitCode::SUCCESS,
            Err(e) => return failed(e),
        }
    }
}

/// Reads the next command and its descriptors (None: the worker closed the socket).
fn receive(socket: &UnixStream) -> std::io::Result<Option<(Request, Vec<OwnedFd>)>> {
    let mut header = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut header)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?
    .bytes;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got == 0 {
        return Ok(None);
    }
    (&*socket).read_exact(&mut header[got..])?;
    let len = u64::from_le_bytes(header);
    if len > MAX_REQUEST {
        return Err(std::io::Error::other(format!("a command of {len} bytes")));
    }
    let mut body = vec![0u8; len as usize];
    (&*socket).read_exact(&mut body)?;
    let request = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    Ok(Some((request, fds)))
}

/// The spawner's running children: pid -> command id.
#[derive(Default)]
struct Children {
    ids: Mutex<HashMap<u32, u64>>,
    started: std::sync::Condvar,
    /// Held by a spawn until its child is recorded, and by the reaper while it reaps: every child
    /// the reaper reaps has its command id.
    spawning: Mutex<()>,
}

/// Waits for any child to exit (one thread for all of them) and answers its wait status.
fn reap(children: &Children, replies: &Mutex<UnixStream>) {
    use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
    loop {
        {
            let mut ids = children.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while ids.is_empty() {
                ids = children.started.wait(ids).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        // Wait for a child to have exited without reaping it: it may be one whose exec failed,
        // which std's spawn reaps itself. Children are reaped only while no spawn is under way.
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                // Not expected: a child is recorded only once forked. Do not spin.
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
        }
        let _no_spawn = children.spawning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let (pid, raw) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, (code & 0xff) << 8),
                Ok(WaitStatus::Signaled(pid, signal, core)) => (pid, signal as i32 | if core { 0x80 } else { 0 }),
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) | Err(_) => break,
            };
            let id =
                children.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&(pid.as_raw() as u32));
            if let Some(id) = id {
                send(replies, &Reply { id, pid: None, error: None, status: Some(raw) });
            }
        }
    }
}

/// Starts one command and answers its pid, then leaves it to [`reap`], which answers its wait
/// status.
fn start(
    request: Request,
    fds: Vec<OwnedFd>,
    own: Option<&Path>,
    replies: &Arc<Mutex<UnixStream>>,
    children: &Children,
) {
    let id = request.id;
    let refused =
        |e: std::io::Error| Reply { id, pid: None, error: Some((e.raw_os_error(), e.to_string())), status: None };
    let Ok::<[OwnedFd; 2], _>([stdout, stderr]) = fds.try_into() else {
        return send(replies, &refused(std::io::Error::other("a command came without its stdout and stderr")));
    };
    let mut cmd = std::process::Command::new(&request.program);
    cmd.args(&request.args)
        .current_dir(&request.cwd)
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    if let Some((uid, gid)) = request.user {
        // As root, std also drops every supplementary group before switching.
        cmd.uid(uid).gid(gid);
    }
    // No reaping until the child is recorded: one whose exec failed std reaps itself (and
    // panics if it cannot), and one that started is answered only after its pid.
    let _no_reaping = children.spawning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return send(replies, &refused(e)),
    };
    let pid = child.id();
    if let (Some(group), Some(own)) = (&request.cgroup, own) {
        super::cgroups::contain(group, pid, own, &[std::process::id()]);
    }
    // The reaper waits for it (std's handle neither waits nor kills when dropped).
    drop(child);
    send(replies, &Reply { id, pid: Some(pid), error: None, status: None });
    children.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(pid, id);
    children.started.notify_one();
}

fn send(replies: &Mutex<UnixStream>, reply: &Reply) {
    let Ok(mut line) = serde_json::to_vec(reply) else { return };
    line.push(b'\n');
    let mut socket = replies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The worker is gone if this fails; the next read of a command ends the spawner.
    let _ = socket.write_all(&line);
}

/// What the worker waits for of one command.
struct Pending {
    started: Option<oneshot::Sender<std::io::Result<u32>>>,
    exited: Option<oneshot::Sender<ExitStatus>>,
}

/// The commands waiting for an answer; None once the spawner is gone.
type PendingMap = Arc<Mutex<Option<HashMap<u64, Pending>>>>;

/// The worker's side: sends commands to the spawner process and hands out its answers; when
/// that process has ended, starts another for the next command (at most one per [`RESTART`]).
pub(crate) struct Spawner {
    program: PathBuf,
    home: Option<PathBuf>,
    link: Mutex<Arc<Link>>,
    /// When the last one was started in place of one that ended.
    restarted: Mutex<Option<std::time::Instant>>,
}

/// The least time between two spawners started in place of ones that ended: one that keeps
/// ending costs the tasks it was running, and meanwhile the worker starts commands itself.
const RESTART: std::time::Duration = std::time::Duration::from_secs(10);

/// One spawner process.
struct Link {
    socket: Mutex<UnixStream>,
    pending: PendingMap,
    next: AtomicU64,
    process: Mutex<std::process::Child>,
}

/// A command the spawner started.
pub(super) struct Spawned {
    pub(super) pid: u32,
    exited: oneshot::Receiver<ExitStatus>,
}

impl Spawned {
    /// Its wait status; an error when the spawner ended before it did (its process group and
    /// cgroup are killed by the caller).
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        (&mut self.exited).await.map_err(|_| std::io::Error::other("the task spawner exited"))
    }
}

impl Spawner {
    /// Starts `program` (this worker's executable) as the spawner, in `cgroup` when given.
    pub(crate) fn start(program: &Path, cgroup: Option<&Path>) -> std::io::Result<Spawner> {
        let link = Mutex::new(Arc::new(Link::start(program, cgroup)?));
        let (program, home) = (program.to_path_buf(), cgroup.map(Path::to_path_buf));
        Ok(Spawner { program, home, link, restarted: Mutex::new(None) })
    }

    /// The spawner process, a new one if the last ended and [`RESTART`] allows; None: there
    /// is none now.
    fn link(&self) -> Option<Arc<Link>> {
        let mut link = self.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if link.alive() {
            return Some(link.clone());
        }
        let mut restarted = self.restarted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if restarted.is_some_and(|at| at.elapsed() < RESTART) {
            return None;
        }
        *restarted = Some(std::time::Instant::now());
        // Its reader killed what it left in the spawners' cgroup before it said it ended.
        if let Ok(mut process) = link.process.lock() {
            let _ = process.try_wait();
        }
        match Link::start(&self.program, self.home.as_deref()) {
            Ok(new) => {
                tracing::warn!("the task spawner ended: started another");
                *link = Arc::new(new);
                Some(link.clone())
            }
            Err(e) => {
                tracing::warn!(error = %e, "the task spawner ended and another cannot start: the worker starts commands itself");
                None
            }
        }
    }

    /// Has the spawner start `request`, writing to `stdout` and `stderr`. None: there is no
    /// spawner now (the caller starts the command itself).
    pub(super) async fn spawn(
        &self,
        request: Request,
        stdout: &std::fs::File,
        stderr: &std::fs::File,
    ) -> Option<std::io::Result<Spawned>> {
        self.link()?.spawn(request, stdout, stderr).await
    }

    /// Stops the spawner (the worker is leaving).
    pub(crate) fn close(&self) {
        self.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner).close();
    }
}

impl Link {
    /// Whether the spawner process still answers.
    fn alive(&self) -> bool {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    fn start(program: &Path, cgroup: Option<&Path>) -> std::io::Result<Link> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = std::process::Command::new(program);
        cmd.arg(SPAWNER_FLAG)
            .args(cgroup)
            .env_clear()
            // One malloc arena: a small address space is what keeps its forks cheap.
            .env("MALLOC_ARENA_MAX", "1")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null());
        let process = cmd.spawn()?;
        let pending: PendingMap = Arc::new(Mutex::new(Some(HashMap::new())));
        let reader = std::io::BufReader::new(ours.try_clone()?);
        let (answers, home) = (pending.clone(), cgroup.map(Path::to_path_buf));
        std::thread::Builder::new().name("task-spawner".into()).spawn(move || {
            read_replies(reader, &answers);
            // A child it started but had not moved into its command's cgroup yet (and whose pid
            // never came back) dies before its command is started again from the worker.
            if let Some(home) = &home {
                super::cgroups::kill(home);
            }
            *answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            tracing::debug!("the task spawner is gone");
        })?;
        let (socket, next, process) = (Mutex::new(ours), AtomicU64::new(0), Mutex::new(process));
        Ok(Link { socket, pending, next, process })
    }

    /// [`Spawner::spawn`] through this process. None: it is gone.
    async fn spawn(
        &self,
        mut request: Request,
        stdout: &std::fs::File,
        stderr: &std::fs::File,
    ) -> Option<std::io::Result<Spawned>> {
        request.id = self.next.fetch_add(1, Ordering::Relaxed);
        let id = request.id;
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        let pending = Pending { started: Some(started_tx), exited: Some(exited_tx) };
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut()?.insert(id, pending);
        if let Err(e) = self.send(&request, stdout, stderr) {
            tracing::warn!(error = %e, "cannot reach the task spawner");
            if let Some(pending) = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
                pending.remove(&id);
            }
            return None;
        }
        match started.await {
            Ok(Ok(pid)) => Some(Ok(Spawned { pid, exited })),
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => None,
        }
    }

    fn send(&self, request: &Request, stdout: &std::fs::File, stderr: &std::fs::File) -> std::io::Result<()> {
        let body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        let header = (body.len() as u64).to_le_bytes();
        let fds = [stdout.as_fd(), stderr.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
        let mut socket = self.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sent =
            rustix::net::sendmsg(&*socket, &[IoSlice::new(&header)], &mut control, rustix::net::SendFlags::NOSIGNAL)?;
        socket.write_all(&header[sent..])?;
        socket.write_all(&body)
    }

    fn close(&self) {
        let socket = self.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = socket.shutdown(std::net::Shutdown::Both);
        let mut process = self.process.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = process.wait();
    }
}

/// Hands each answer to the command waiting for it, until the spawner is gone.
fn read_replies(reader: impl BufRead, pending: &PendingMap) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Ok(reply) = serde_json::from_str::<Reply>(&line) else {
            tracing::warn!("an unreadable answer from the task spawner");
            continue;
        };
        let mut pending = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(pending) = pending.as_mut() else { return };
        let Some(entry) = pending.get_mut(&reply.id) else { continue };
        if let Some(status) = reply.status {
            if let Some(tx) = entry.exited.take() {
                let _ = tx.send(ExitStatus::from_raw(status));
            }
            pending.remove(&reply.id);
            continue;
        }
        let started = match (reply.pid, reply.error) {
            (Some(pid), _) => Ok(pid),
            (None, Some((Some(code), _))) => Err(std::io::Error::from_raw_os_error(code)),
            (None, Some((None, message))) => Err(std::io::Error::other(message)),
            (None, None) => Err(std::io::Error::other("the task spawner answered nothing")),
        };
        let failed = started.is_err();
        if let Some(tx) = entry.started.take() {
            let _ = tx.send(started);
        }
        if failed {
            pending.remove(&reply.id);
        }
    }
}
