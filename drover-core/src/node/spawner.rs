//! Task spawners: small helper processes that start commands as other users, so that a command is
//! not a fork of the multi-threaded worker.
//!
//! std switches users in a forked child (posix_spawn cannot), and a fork copies the parent's page
//! tables, which the exec then throws away: for a worker that runs short tasks as their own users,
//! most of the node's CPU per task. So `drover-worker` starts its own executable as a spawner
//! ([`SPAWNER_FLAG`], no environment but allocator settings, one end of a Unix socket as its
//! stdin): one as root for every user, and one per kept user (a pool-scope auto-user, a named
//! account; at most [`MAX_OWN`]) that runs as that user, not dumpable, and so starts that user's
//! commands with posix_spawn (vfork: no page tables copied). The worker sends each command
//! (program, arguments, directory, environment, user; its length, then MessagePack) with its
//! stdout, its stderr and its cgroup's `cgroup.procs`, opened by the worker, as descriptors (the
//! kernel checks a move into a cgroup against whoever opened that file, Linux 5.16 on); the spawner
//! starts it, moves it (and what it forked meanwhile) into the command's cgroup, and answers the
//! child's pid, then its wait status when it exits. Each spawner starts in a cgroup of its own
//! (`spawner`, `spawner-<uid>`) and exits when the worker closes the socket (or dies). One that
//! ends otherwise is replaced for the worker's next command (at once the first time, then at most
//! one every [`RESTART`]); meanwhile a user's commands go to the root spawner, and without that the
//! worker starts commands itself.
//!
//! A spawner of one user is that user's to signal or limit (`kill`, `prlimit`), as are all its
//! processes: its tasks can stop their own user's spawner, never another's. One that does not
//! answer within [`ANSWER`] is killed and replaced, and its running commands are handed back.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The argument that makes `drover-worker` a spawner (followed by the spawner's cgroup, empty for
/// none, and the `uid:gid` of a spawner of one user).
pub const SPAWNER_FLAG: &str = "--task-spawner";

/// How a spawner of one user exits when it cannot be one on this host (not root, or a kernel that
/// checks a move into a cgroup against the writer, before Linux 5.16): its user's commands go to
/// the root spawner from then on.
const UNSUPPORTED: u8 = 3;

/// The most spawners of one user a worker starts; further users' commands go to the root one.
pub(super) const MAX_OWN: usize = 8;

/// The most bytes one answer of a spawner may have (a pid, an error message, a wait status).
const MAX_ANSWER: usize = 64 * 1024;

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

/// Runs a spawner until the worker closes the socket on stdin. `args`, after [`SPAWNER_FLAG`]:
/// the spawner's own cgroup, where its children start before each is moved into its command's
/// (empty: none), and for a spawner of one user its `uid:gid`.
pub fn serve(mut args: impl Iterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let failed = |e: std::io::Error| {
        eprintln!("drover-worker {SPAWNER_FLAG}: {e}");
        std::process::ExitCode::FAILURE
    };
    let cgroup = args.next().filter(|a| !a.is_empty()).map(PathBuf::from);
    let user = match args.next() {
        None => None,
        Some(arg) => match arg.to_str().and_then(|a| a.split_once(':')).map(|(u, g)| (u.parse(), g.parse())) {
            Some((Ok(uid), Ok(gid))) => Some((uid, gid)),
            _ => return failed(std::io::Error::other(format!("{arg:?} is not uid:gid"))),
        },
    };
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => return failed(e),
    };
    if let Some(dir) = &cgroup {
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()) {
            return failed(std::io::Error::new(e.kind(), format!("move into {}: {e}", dir.display())));
        }
    }
    if let Some(user) = user {
        if let Err(e) = become_user(user, cgroup.as_deref()) {
            eprintln!("drover-worker {SPAWNER_FLAG}: cannot serve uid {}: {e}", user.0);
            return std::process::ExitCode::from(UNSUPPORTED);
        }
    }
    // Kept open: each command's stdin, and where its children start.
    let devnull = match std::fs::File::open("/dev/null") {
        Ok(file) => file,
        Err(e) => return failed(e),
    };
    let home = match cgroup.as_ref().map(|dir| std::fs::File::open(dir.join("cgroup.procs"))).transpose() {
        Ok(home) => home,
        Err(e) => return failed(e),
    };
    // Children's exits come as reads of a signalfd, beside the commands on the socket: one thread
    // starts and reaps, with no hand-off between threads. SIGCHLD is blocked for it but while
    // a command starts (a child inherits the mask).
    let exits = match child_exits() {
        Ok(fd) => fd,
        Err(e) => return failed(e),
    };
    let own = Own { devnull: &devnull, home: home.as_ref(), user, pid: std::process::id() };
    let mut children = HashMap::new();
    loop {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN), PollFd::new(exits.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return failed(e.into()),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let (command, exited) = (ready(&fds[0]), ready(&fds[1]));
        if exited {
            // Exits coalesce into one signal (SIGCHLD does not queue: one read takes it, and one
            // sent after keeps the descriptor readable), then reap until none is left.
            let _ = exits.read_signal();
            reap(&socket, &mut children);
        }
        if command {
            match receive(&socket) {
                Ok(Some((request, fds))) => start(request, fds, &own, &socket, &mut children),
                Ok(None) => return std::process::ExitCode::SUCCESS,
                Err(e) => return failed(e),
            }
            // A child that exited while SIGCHLD was unblocked for the start signalled nothing.
            reap(&socket, &mut children);
        }
    }
}

/// SIGCHLD alone.
fn sigchld() -> nix::sys::signal::SigSet {
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGCHLD);
    mask
}

/// A signalfd that becomes readable when a child exits (SIGCHLD blocked for this thread).
fn child_exits() -> std::io::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    sigchld().thread_block()?;
    Ok(SignalFd::with_flags(&sigchld(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?)
}

/// Makes this spawner `user`'s for good: no supplementary groups, its gid and uid, not dumpable
/// (its commands, running as the same user, can neither trace it nor reach its descriptors),
/// and checks that it can still move its children into cgroups through files the worker opens.
fn become_user((uid, gid): (u32, u32), home: Option<&Path>) -> std::io::Result<()> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let procs = home.map(|dir| std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))).transpose()?;
    setgroups(&[])?;
    setgid(Gid::from_raw(gid))?;
    setuid(Uid::from_raw(uid))?;
    nix::sys::prctl::set_dumpable(false)?;
    if let Some(mut procs) = procs {
        // Already there: the kernel checks the right to move, then finds nothing to do.
        procs.write_all(std::process::id().to_string().as_bytes()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("a move into a cgroup through a file root opened: {e}"))
        })?;
    }
    Ok(())
}

/// Reads the next command and its descriptors (None: the worker closed the socket).
fn receive(socket: &UnixStream) -> std::io::Result<Option<(Request, Vec<OwnedFd>)>> {
    let mut header = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
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
    let request = rmp_serde::from_slice(&body).map_err(std::io::Error::other)?;
    Ok(Some((request, fds)))
}

/// Reaps every child that has exited and answers its wait status (`children`: pid -> command
/// id). A child is reaped only here, never while a command starts: one whose exec failed std's
/// spawn reaps itself.
fn reap(replies: &UnixStream, children: &mut HashMap<u32, u64>) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        let (pid, raw) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, (code & 0xff) << 8),
            Ok(WaitStatus::Signaled(pid, signal, core)) => (pid, signal as i32 | if core { 0x80 } else { 0 }),
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) | Err(_) => return,
        };
        if let Some(id) = children.remove(&(pid.as_raw() as u32)) {
            send(replies, &Reply { id, pid: None, error: None, status: Some(raw) });
        }
    }
}

/// What a spawner keeps for every command.
struct Own<'a> {
    devnull: &'a std::fs::File,
    /// Its cgroup's `cgroup.procs`, where its children start.
    home: Option<&'a std::fs::File>,
    /// Its user, for a spawner of one user.
    user: Option<(u32, u32)>,
    /// Its pid.
    pid: u32,
}

/// Starts one command (as the spawner's own user, or switching to its user) and answers its
/// pid, then leaves it to [`reap`], which answers its wait status. Its descriptors: stdout,
/// stderr and, to move it into its cgroup, that cgroup's `cgroup.procs`.
fn start(request: Request, fds: Vec<OwnedFd>, own: &Own<'_>, replies: &UnixStream, children: &mut HashMap<u32, u64>) {
    let id = request.id;
    let refused =
        |e: std::io::Error| Reply { id, pid: None, error: Some((e.raw_os_error(), e.to_string())), status: None };
    let mut fds = fds.into_iter();
    let (Some(stdout), Some(stderr), procs) = (fds.next(), fds.next(), fds.next().map(std::fs::File::from)) else {
        return send(replies, &refused(std::io::Error::other("a command came without its stdout and stderr")));
    };
    if own.user.is_some() && request.user != own.user {
        return send(replies, &refused(std::io::Error::other("a command of another user than this spawner's")));
    }
    let spawned = match (request.user, own.user) {
        (Some(user), None) => {
            own.devnull.try_clone().and_then(|stdin| fork_as(&request, user, [stdin.into(), stdout, stderr]))
        }
        _ => spawn_as_self(&request, [own.devnull.as_fd(), stdout.as_fd(), stderr.as_fd()]),
    };
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => return send(replies, &refused(e)),
    };
    if let (Some(procs), Some(home)) = (&procs, own.home) {
        super::cgroups::contain(procs, pid, home, &[own.pid]);
    }
    // [`reap`] waits for it and answers its exit after its pid.
    send(replies, &Reply { id, pid: Some(pid), error: None, status: None });
    children.insert(pid, id);
}

/// Starts a command as another user (the root spawner): std forks (a posix_spawn cannot switch
/// users) and drops every supplementary group before switching.
fn fork_as(request: &Request, (uid, gid): (u32, u32), [stdin, stdout, stderr]: [OwnedFd; 3]) -> std::io::Result<u32> {
    let mut cmd = std::process::Command::new(&request.program);
    cmd.args(&request.args)
        .current_dir(&request.cwd)
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .uid(uid)
        .gid(gid);
    // Started with SIGCHLD unblocked, as it would be anywhere else; blocked again at once (a
    // spawner that cannot is useless: it ends, and the worker starts another).
    let spawned = sigchld().thread_unblock().map_err(std::io::Error::from).and_then(|()| cmd.spawn());
    if let Err(e) = sigchld().thread_block() {
        eprintln!("drover-worker {SPAWNER_FLAG}: cannot block SIGCHLD again: {e}");
        std::process::exit(1);
    }
    // std's handle neither waits nor kills when dropped: [`reap`] waits for it.
    Ok(spawned?.id())
}

/// Starts a command as the spawner's own user with posix_spawn (vfork: no page tables copied),
/// in its working directory (the spawner, one thread, moves there first), in a process group of
/// its own, with no signal blocked and every signal's disposition its default. Naming every
/// signal to reset spares glibc's child asking for each one's disposition first: std's spawn
/// names only SIGPIPE, and its child then made 121 `rt_sigaction` calls before its exec, not
/// 64 (0.7 µs each on a 2-core VM: some 40 µs per command).
fn spawn_as_self(request: &Request, stdio: [std::os::fd::BorrowedFd<'_>; 3]) -> std::io::Result<u32> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    use nix::sys::signal::SigSet;
    use std::os::fd::AsRawFd;
    fn text(s: impl Into<Vec<u8>>) -> std::io::Result<std::ffi::CString> {
        std::ffi::CString::new(s)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "nul byte found in provided data"))
    }
    let args = std::iter::once(&request.program).chain(&request.args).map(|a| text(a.as_str()));
    let args = args.collect::<std::io::Result<Vec<_>>>()?;
    // One value per name, the last given (as std's `envs`).
    let env: std::collections::BTreeMap<&str, &str> =
        request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let env = env.into_iter().map(|(k, v)| text(format!("{k}={v}"))).collect::<std::io::Result<Vec<_>>>()?;
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(nix::unistd::Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_sigdefault(&SigSet::all())?;
    let mut actions = PosixSpawnFileActions::init()?;
    for (fd, to) in stdio.iter().zip(0..) {
        actions.add_dup2(fd.as_raw_fd(), to)?;
    }
    std::env::set_current_dir(&request.cwd)?;
    let pid = posix_spawn(request.program.as_str(), &actions, &attr, &args, &env)?;
    Ok(pid.as_raw() as u32)
}

fn send(mut replies: &UnixStream, reply: &Reply) {
    let Ok(mut line) = serde_json::to_vec(reply) else { return };
    line.push(b'\n');
    // The worker is gone if this fails; the next read of a command ends the spawner.
    let _ = replies.write_all(&line);
}

/// What the worker waits for of one command.
struct Pending {
    started: Option<oneshot::Sender<std::io::Result<u32>>>,
    exited: Option<oneshot::Sender<ExitStatus>>,
}

/// The commands waiting for an answer; None once the spawner is gone.
type PendingMap = Arc<Mutex<Option<HashMap<u64, Pending>>>>;

/// The worker's side: sends commands to its spawner processes and hands out their answers; starts
/// another in place of one that ended (at most one per [`RESTART`] each).
pub(crate) struct Spawner {
    program: PathBuf,
    /// The worker's own cgroup, where each spawner gets one of its own.
    cgroups: Option<PathBuf>,
    /// The root one, for every user.
    shared: Slot,
    /// Those of one kept user each, by uid and gid.
    own: Mutex<HashMap<(u32, u32), Arc<Slot>>>,
}

/// The least time between two spawners started in place of ones that ended: one that keeps
/// ending costs the tasks it was running, and meanwhile its commands start otherwise.
const RESTART: std::time::Duration = std::time::Duration::from_secs(10);

/// A spawner's place: its user (None: root), its cgroup, its process while there is one.
struct Slot {
    user: Option<(u32, u32)>,
    home: Option<PathBuf>,
    link: Mutex<Option<Arc<Link>>>,
    /// When the last one was started in place of one that ended.
    restarted: Mutex<Option<std::time::Instant>>,
    /// It cannot run here (its process said so): never started again.
    unsupported: std::sync::atomic::AtomicBool,
}

/// How long a spawner may take to answer a command's pid before it is killed and replaced.
const ANSWER: std::time::Duration = std::time::Duration::from_secs(30);

/// One spawner process.
struct Link {
    /// Where commands are written; its read half is [`read_replies`]'s.
    socket: tokio::net::unix::OwnedWriteHalf,
    /// Held while one command is written, so that two are never interleaved.
    sending: tokio::sync::Mutex<()>,
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
    /// Starts `program` (this worker's executable) as the root spawner; each spawner gets a
    /// cgroup of its own beneath `cgroups` (the worker's) when given.
    pub(crate) fn start(program: &Path, cgroups: Option<&Path>) -> std::io::Result<Spawner> {
        let shared = Slot::new(None, cgroups);
        let link = Link::start(program, shared.home.as_deref(), None)?;
        *shared.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(link));
        let (program, cgroups) = (program.to_path_buf(), cgroups.map(Path::to_path_buf));
        Ok(Spawner { program, cgroups, shared, own: Mutex::new(HashMap::new()) })
    }

    /// Has a spawner start `request`, writing to `stdout` and `stderr`, moved into the cgroup
    /// whose `cgroup.procs` is `procs`: the spawner of its user when `kept` (the user is a kept
    /// one and has one), else the root one. None: that spawner is not there now, or went before
    /// it answered (the caller kills the command's cgroup, and tries the root spawner or starts
    /// the command itself).
    pub(super) async fn spawn(
        &self,
        request: &mut Request,
        stdout: &std::fs::File,
        stderr: &std::fs::File,
        procs: Option<&std::fs::File>,
        kept: bool,
    ) -> Option<std::io::Result<Spawned>> {
        let slot = request.user.filter(|_| kept).and_then(|user| self.own_slot(user));
        let link = match &slot {
            Some(own) => own.link(&self.program)?,
            None => self.shared.link(&self.program)?,
        };
        link.spawn(request, stdout, stderr, procs).await
    }

    /// The place of `user`'s own spawner (None: [`MAX_OWN`] users have one already).
    fn own_slot(&self, user: (u32, u32)) -> Option<Arc<Slot>> {
        let mut own = self.own.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = own.get(&user) {
            return Some(slot.clone());
        }
        if own.len() >= MAX_OWN {
            return None;
        }
        let slot = Arc::new(Slot::new(Some(user), self.cgroups.as_deref()));
        own.insert(user, slot.clone());
        Some(slot)
    }

    /// Stops the spawners (the worker is leaving).
    pub(crate) fn close(&self) {
        self.shared.close();
        let own: Vec<_> =
            self.own.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        for slot in own {
            slot.close();
        }
    }
}

impl Slot {
    fn new(user: Option<(u32, u32)>, cgroups: Option<&Path>) -> Slot {
        let name = match user {
            Some((uid, _)) => format!("spawner-{uid}"),
            None => "spawner".to_string(),
        };
        // Made once; one left by an earlier spawner of the same user serves again.
        let home = cgroups.map(|dir| dir.join(name)).filter(|dir| match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::AlreadyExists,
        });
        let unsupported = std::sync::atomic::AtomicBool::new(false);
        Slot { user, home, link: Mutex::new(None), restarted: Mutex::new(None), unsupported }
    }

    /// Its spawner process: the one running, a first one, or a new one if the last ended and
    /// [`RESTART`] allows. None: there is none now.
    fn link(&self, program: &Path) -> Option<Arc<Link>> {
        if self.unsupported.load(Ordering::Relaxed) {
            return None;
        }
        let mut link = self.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = link.as_ref().filter(|l| l.alive()) {
            return Some(old.clone());
        }
        let mut restarted = self.restarted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if restarted.is_some_and(|at| at.elapsed() < RESTART) {
            return None;
        }
        if let Some(old) = link.as_ref() {
            *restarted = Some(std::time::Instant::now());
            // Its reader killed what it left in its cgroup before it said it ended.
            let code = old.process.lock().ok().and_then(|mut p| p.try_wait().ok().flatten()).and_then(|s| s.code());
            if code == Some(UNSUPPORTED.into()) {
                tracing::warn!(uid = self.user.map(|u| u.0), "a task spawner of one user cannot run on this host (its error is above): the root one starts that user's commands");
                self.unsupported.store(true, Ordering::Relaxed);
                return None;
            }
            tracing::warn!(uid = self.user.map(|u| u.0), "a task spawner ended: starting another");
        }
        match Link::start(program, self.home.as_deref(), self.user) {
            Ok(new) => {
                let new = Arc::new(new);
                *link = Some(new.clone());
                Some(new)
            }
            Err(e) => {
                tracing::warn!(uid = self.user.map(|u| u.0), error = %e, "a task spawner cannot start: its commands start otherwise");
                *restarted = Some(std::time::Instant::now());
                None
            }
        }
    }

    fn close(&self) {
        if let Some(link) = self.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            link.close();
        }
    }
}

impl Link {
    /// Whether the spawner process still answers.
    fn alive(&self) -> bool {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    fn start(program: &Path, cgroup: Option<&Path>, user: Option<(u32, u32)>) -> std::io::Result<Link> {
        let (ours, theirs) = UnixStream::pair()?;
        // The running worker's own executable, even where a newer one has replaced it on disk
        // since the worker started (an upgrade): a spawner started later speaks the worker's
        // protocol. It is shown under the executable's path.
        let own = Path::new("/proc/self/exe");
        let mut cmd = std::process::Command::new(if own.exists() { own } else { program });
        cmd.arg0(program)
            .arg(SPAWNER_FLAG)
            .arg(cgroup.unwrap_or(Path::new("")))
            .args(user.map(|(uid, gid)| format!("{uid}:{gid}")))
            .env_clear()
            // A small address space is what keeps its forks cheap: one glibc malloc arena, and
            // no transparent huge pages for mimalloc (the worker's allocator), whose first
            // copy-on-write fault after a fork would copy 2 MiB.
            .env("MALLOC_ARENA_MAX", "1")
            .env("MIMALLOC_ALLOW_THP", "0")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null());
        let process = cmd.spawn()?;
        let pending: PendingMap = Arc::new(Mutex::new(Some(HashMap::new())));
        // Answers are read on the runtime, not by a thread of their own: one wakes the task
        // waiting for it without a hand-off between threads.
        ours.set_nonblocking(true)?;
        let (reader, socket) = tokio::net::UnixStream::from_std(ours)?.into_split();
        let (answers, home) = (pending.clone(), cgroup.map(Path::to_path_buf));
        tokio::spawn(async move {
            read_replies(reader, &answers).await;
            // A child it started but had not moved into its command's cgroup yet (and whose pid
            // never came back) dies before its command is started again from the worker.
            if let Some(home) = &home {
                super::cgroups::kill(home);
            }
            *answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            tracing::debug!("the task spawner is gone");
        });
        let (sending, next, process) = (tokio::sync::Mutex::new(()), AtomicU64::new(0), Mutex::new(process));
        Ok(Link { socket, sending, pending, next, process })
    }

    /// [`Spawner::spawn`] through this process. None: it is gone.
    async fn spawn(
        &self,
        request: &mut Request,
        stdout: &std::fs::File,
        stderr: &std::fs::File,
        procs: Option<&std::fs::File>,
    ) -> Option<std::io::Result<Spawned>> {
        request.id = self.next.fetch_add(1, Ordering::Relaxed);
        let id = request.id;
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        let pending = Pending { started: Some(started_tx), exited: Some(exited_tx) };
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut()?.insert(id, pending);
        let sent = match tokio::time::timeout(ANSWER, self.send(request, stdout, stderr, procs)).await {
            Ok(sent) => sent,
            Err(_) => {
                // It stopped reading (stopped, say): what it was sent last may be cut short.
                self.kill("did not take a command");
                Err(std::io::Error::other("the task spawner did not take the command"))
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot reach the task spawner");
            if let Some(pending) = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
                pending.remove(&id);
            }
            return None;
        }
        match tokio::time::timeout(ANSWER, started).await {
            Ok(Ok(Ok(pid))) => Some(Ok(Spawned { pid, exited })),
            Ok(Ok(Err(e))) => Some(Err(e)),
            Ok(Err(_)) => None,
            Err(_) => {
                // Stopped, say (a spawner of one user can be signalled by that user's tasks).
                self.kill("did not answer");
                None
            }
        }
    }

    /// Kills the spawner process (its reader then finds it gone).
    fn kill(&self, why: &str) {
        tracing::warn!(after_s = ANSWER.as_secs(), "a task spawner {why}: killed");
        let _ = self.process.lock().unwrap_or_else(std::sync::PoisonError::into_inner).kill();
    }

    /// Writes one command: its length, then its MessagePack, with the descriptors on its first
    /// bytes.
    async fn send(
        &self,
        request: &Request,
        stdout: &std::fs::File,
        stderr: &std::fs::File,
        procs: Option<&std::fs::File>,
    ) -> std::io::Result<()> {
        // The length goes in front of the command, in the one buffer the command is written to.
        let mut message = vec![0u8; 8];
        rmp_serde::encode::write(&mut message, request).map_err(std::io::Error::other)?;
        let len = (message.len() - 8) as u64;
        message[..8].copy_from_slice(&len.to_le_bytes());
        let fds: Vec<_> = [stdout, stderr].into_iter().chain(procs).map(|f| f.as_fd()).collect();
        let flags = rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT;
        let socket = self.socket.as_ref();
        let _turn = self.sending.lock().await;
        let mut sent = socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
                Ok(rustix::net::sendmsg(socket, &[IoSlice::new(&message)], &mut control, flags)?)
            })
            .await?;
        while sent < message.len() {
            sent += socket
                .async_io(tokio::io::Interest::WRITABLE, || Ok(rustix::net::send(socket, &message[sent..], flags)?))
                .await?;
        }
        Ok(())
    }

    fn close(&self) {
        let _ = rustix::net::shutdown(self.socket.as_ref(), rustix::net::Shutdown::Both);
        let mut process = self.process.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = process.wait();
    }
}

/// Hands each answer (a line of JSON) to the command waiting for it, until the spawner is gone.
async fn read_replies(socket: tokio::net::unix::OwnedReadHalf, pending: &PendingMap) {
    use futures_util::StreamExt;
    let codec = tokio_util::codec::AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_ANSWER);
    let mut lines = tokio_util::codec::FramedRead::new(socket, codec);
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                tracing::warn!("an answer from the task spawner longer than {MAX_ANSWER} bytes");
                return;
            }
            Err(_) => return,
        };
        if !answer(&line, pending) {
            return;
        }
    }
}

/// Hands one answer to the command waiting for it; false once the spawner is gone.
fn answer(line: &[u8], pending: &PendingMap) -> bool {
    let Ok(reply) = serde_json::from_slice::<Reply>(line) else {
        tracing::warn!("an unreadable answer from the task spawner");
        return true;
    };
    let mut pending = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(pending) = pending.as_mut() else { return false };
    let Some(entry) = pending.get_mut(&reply.id) else { return true };
    if let Some(status) = reply.status {
        if let Some(tx) = entry.exited.take() {
            let _ = tx.send(ExitStatus::from_raw(status));
        }
        pending.remove(&reply.id);
        return true;
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
    true
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    /// A command started as the spawner's own user gets the last value of a name given twice,
    /// its directory, a process group of its own, no signal blocked and none ignored, whatever
    /// the spawner blocks or ignores (this test, as every Rust program, ignores SIGPIPE).
    #[test]
    fn a_command_of_the_spawners_user_starts_clean() {
        let out_path = std::env::temp_dir().join(format!("drover-spawn-{}", std::process::id()));
        let out = std::fs::File::create(&out_path).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let cwd = std::env::current_dir().unwrap();
        // The shell reads its own status with builtins: while a child of it runs, the shell
        // may block signals of its own.
        let script = "echo $X; pwd; [ $(ps -o pgid= -p $$) = $$ ] && echo own-group; \
                      while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k\t$v\";; esac; done < /proc/$$/status";
        let request = super::Request {
            id: 1,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: cwd.to_string_lossy().into_owned(),
            env: vec![("X".into(), "1".into()), ("PATH".into(), "/usr/bin:/bin".into()), ("X".into(), "2".into())],
            user: None,
        };
        // This thread blocks SIGCHLD, as a spawner does.
        super::sigchld().thread_block().unwrap();
        let pid = super::spawn_as_self(&request, [null.as_fd(), out.as_fd(), out.as_fd()]).unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        super::sigchld().thread_unblock().unwrap();
        let said = std::fs::read_to_string(&out_path).unwrap();
        std::fs::remove_file(&out_path).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid as i32), 0), "{said}");
        let expected = format!("2\n{}\nown-group\nSigBlk:\t0000000000000000\nSigIgn:\t", cwd.display());
        assert!(said.starts_with(&expected), "{said}");
        // glibc's posix_spawn ignores its own two (32 and 33) in every child, whose libc takes
        // them back; none other is ignored.
        let ignored = u64::from_str_radix(said[expected.len()..].trim(), 16).unwrap();
        assert_eq!(ignored & !(3 << 31), 0, "{said}");
    }
}
