//! Opening, listing and removing a task's files without leaving its directory: whatever symlinks,
//! `..` or special files the task left behind, the worker reads and writes only beneath the
//! directory it names
//! (`openat2` with `RESOLVE_BENEATH`; a link that stays inside is followed, one that leads out is
//! refused), and never blocks on a FIFO.

use crate::{Error, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::os::fd::OwnedFd;
use std::path::Path;

/// How every path under a task's directory is resolved.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_PATH;
    Ok(nix::fcntl::open(dir, flags, Mode::empty())?)
}

/// Why `rel` cannot be opened under `dir`, in one line.
fn refused(dir: &Path, rel: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32) {
        return Error::NotFound { kind: "file", id: rel.to_string_lossy().into_owned() };
    }
    let why = match e.raw_os_error() {
        Some(e) if e == nix::errno::Errno::EXDEV as i32 || e == nix::errno::Errno::ELOOP as i32 => {
            "it leads outside the task directory".to_string()
        }
        _ => e.to_string(),
    };
    Error::Storage(format!("{}: {why}", dir.join(rel).display()))
}

/// Opens the regular file `rel` beneath `dir` for reading. A path that leads outside `dir`, or
/// that is not a regular file, is refused.
pub fn open_file(dir: &Path, rel: &Path) -> Result<std::fs::File> {
    let open = || -> std::io::Result<std::fs::File> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(resolve());
        let fd = nix::fcntl::openat2(open_dir(dir)?, rel, how)?;
        Ok(std::fs::File::from(fd))
    };
    let file = open().map_err(|e| refused(dir, rel, e))?;
    let meta = file.metadata().map_err(|e| refused(dir, rel, e))?;
    if !meta.is_file() {
        return Err(Error::Storage(format!("{}: not a regular file", dir.join(rel).display())));
    }
    Ok(file)
}

/// Creates `rel` beneath `dir` afresh (whatever was there, a planted link included, is removed
/// first, and the new file is never reached through a link) and writes `contents` to it.
pub fn replace_file(dir: &Path, rel: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let write = || -> std::io::Result<()> {
        let dir_fd = open_dir(dir)?;
        match nix::unistd::unlinkat(&dir_fd, rel, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(resolve());
        let mut file = std::fs::File::from(nix::fcntl::openat2(&dir_fd, rel, how)?);
        file.write_all(contents)
    };
    write().map_err(|e| refused(dir, rel, e))
}

/// Reads the small regular file `rel` beneath `dir` (None if absent, a link, or not a file).
pub fn read_small(dir: &Path, rel: &Path, limit: u64) -> Option<String> {
    use std::io::Read;
    let file = open_file(dir, rel).ok()?;
    let mut text = String::new();
    file.take(limit).read_to_string(&mut text).ok()?;
    Some(text)
}

/// What a file or directory beneath a directory is, as a node's file service shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Its path relative to the directory listed, with '/' between components.
    pub name: String,
    pub is_directory: bool,
    pub size: u64,
    /// Last modified and last changed (creation time, as near as Linux tells it), in ms.
    pub modified_ms: i64,
    pub changed_ms: i64,
    /// `st_mode`, as Azure's fileMode shows it (octal, e.g. `0100644`).
    pub mode: String,
}

impl Entry {
    /// A regular file kept in storage (a task's stdout.txt or stderr.txt), as a node would show it.
    pub fn stored(name: &str, size: u64, modified_ms: i64) -> Entry {
        let mode = "0100644".into();
        Entry { name: name.into(), is_directory: false, size, modified_ms, changed_ms: modified_ms, mode }
    }

    /// As Azure shows a file of a task or a node (NodeFile), with its URL if it has one.
    pub fn to_azure(&self, url: Option<String>) -> serde_json::Value {
        use crate::model::rfc3339;
        serde_json::json!({"name": self.name, "url": url, "isDirectory": self.is_directory,
            "properties": {"creationTime": rfc3339(self.changed_ms), "lastModified": rfc3339(self.modified_ms),
                           "contentLength": self.size, "contentType": "application/octet-stream", "fileMode": self.mode}})
    }

    fn new(name: String, st: &nix::sys::stat::FileStat) -> Entry {
        let ms = |s: i64, ns: i64| s.saturating_mul(1000).saturating_add(ns / 1_000_000);
        Entry {
            name,
            is_directory: st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR,
            size: u64::try_from(st.st_size).unwrap_or(0),
            modified_ms: ms(st.st_mtime, st.st_mtime_nsec),
            changed_ms: ms(st.st_ctime, st.st_ctime_nsec),
            mode: format!("{:07o}", st.st_mode),
        }
    }
}

/// Opens `rel` beneath `dir` (the directory itself when `rel` is empty) as a path handle.
fn open_path(dir: &Path, rel: &Path) -> std::io::Result<OwnedFd> {
    if rel.as_os_str().is_empty() {
        return open_dir(dir);
    }
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(resolve());
    Ok(nix::fcntl::openat2(open_dir(dir)?, rel, how)?)
}

/// What the file `rel`, open as `file`, is.
pub fn stat_open(file: &std::fs::File, rel: &Path) -> Result<Entry> {
    let st = nix::sys::stat::fstat(file).map_err(|e| Error::io(format!("{}", rel.display()), e.into()))?;
    Ok(Entry::new(rel.to_string_lossy().into_owned(), &st))
}

/// What `rel` beneath `dir` is (a link inside is followed; one leading out is refused).
pub fn stat(dir: &Path, rel: &Path) -> Result<Entry> {
    let st = open_path(dir, rel).and_then(|fd| Ok(nix::sys::stat::fstat(&fd)?)).map_err(|e| refused(dir, rel, e))?;
    Ok(Entry::new(rel.to_string_lossy().into_owned(), &st))
}

/// The entries of the directory `rel` beneath `dir`, and with `recursive` those of its
/// subdirectories, at most `limit` of them, sorted by name. Links are listed, never followed.
pub fn list(dir: &Path, rel: &Path, recursive: bool, limit: usize) -> Result<Vec<Entry>> {
    let walk = || -> std::io::Result<Vec<Entry>> {
        let fd = if rel.as_os_str().is_empty() {
            nix::fcntl::open(dir, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?
        } else {
            let how = OpenHow::new().flags(OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(resolve());
            nix::fcntl::openat2(open_dir(dir)?, rel, how)?
        };
        let mut out = Vec::new();
        walk_dir(fd, "", recursive, limit, &mut out)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    };
    walk().map_err(|e| refused(dir, rel, e))
}

fn walk_dir(fd: OwnedFd, prefix: &str, recursive: bool, limit: usize, out: &mut Vec<Entry>) -> std::io::Result<()> {
    use nix::sys::stat::fstatat;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let names = names(&mut d);
    let mut subdirs = Vec::new();
    for name in names {
        let name = name.as_c_str();
        let Ok(st) = fstatat(&d, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
        let shown = format!("{prefix}{}", name.to_string_lossy());
        let e = Entry::new(shown.clone(), &st);
        if recursive && e.is_directory {
            subdirs.push((name.to_owned(), shown));
        }
        if out.len() >= limit {
            return Ok(());
        }
        out.push(e);
    }
    for (name, shown) in subdirs {
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if let Ok(sub) = nix::fcntl::openat(&d, name.as_c_str(), flags, Mode::empty()) {
            walk_dir(sub, &format!("{shown}/"), recursive, limit, out)?;
        }
    }
    Ok(())
}

/// Removes `rel` beneath `dir`: a file or link (never what it points to), or a directory, which
/// must be empty unless `recursive`. The directory itself cannot be removed.
pub fn remove(dir: &Path, rel: &Path, recursive: bool) -> Result<()> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(Error::invalid(format!("{}: not a file beneath {}", rel.display(), dir.display())));
    };
    let run = || -> std::io::Result<()> {
        let at = if parent.as_os_str().is_empty() {
            open_dir(dir)?
        } else {
            let how = OpenHow::new().flags(OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(resolve());
            nix::fcntl::openat2(open_dir(dir)?, parent, how)?
        };
        remove_at(&at, name, recursive)
    };
    run().map_err(|e| match e.raw_os_error() {
        Some(c) if c == nix::errno::Errno::ENOTEMPTY as i32 => {
            Error::State(format!("{}: a directory that is not empty (remove it recursively)", rel.display()))
        }
        _ => refused(dir, rel, e),
    })
}

fn remove_at<P: ?Sized + nix::NixPath>(at: &impl std::os::fd::AsFd, name: &P, recursive: bool) -> std::io::Result<()> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let st = nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
        return Ok(unlinkat(at, name, UnlinkatFlags::NoRemoveDir)?);
    }
    if recursive {
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut d = nix::dir::Dir::from_fd(nix::fcntl::openat(at, name, flags, Mode::empty())?)?;
        for n in names(&mut d) {
            remove_at(&d, n.as_c_str(), true)?;
        }
    }
    Ok(unlinkat(at, name, UnlinkatFlags::RemoveDir)?)
}

/// The names in a directory, `.` and `..` left out.
fn names(d: &mut nix::dir::Dir) -> Vec<std::ffi::CString> {
    d.iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| !matches!(n.to_bytes(), b"." | b".."))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_out_of_the_directory_are_refused_and_links_within_followed() {
        let root = std::env::temp_dir().join(format!("drover-beneath-{}", std::process::id()));
        let task = root.join("task");
        std::fs::create_dir_all(task.join("wd/sub")).unwrap();
        std::fs::write(root.join("secret"), "secret").unwrap();
        std::fs::write(task.join("wd/real.txt"), "mine").unwrap();
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, task.join(at)).unwrap();
        link(root.join("secret").to_str().unwrap(), "wd/abs.txt");
        link("../../secret", "wd/rel.txt");
        link("real.txt", "wd/inside.txt");
        link(root.to_str().unwrap(), "wd/sub/up");
        let read = |rel: &str| read_small(&task, Path::new(rel), 100);
        assert_eq!(read("wd/real.txt").as_deref(), Some("mine"));
        assert_eq!(read("wd/inside.txt").as_deref(), Some("mine"));
        for escape in ["wd/abs.txt", "wd/rel.txt", "wd/sub/up/secret", "../secret", "wd/sub"] {
            assert_eq!(read(escape), None, "{escape}");
        }
        let err = open_file(&task, Path::new("wd/abs.txt")).unwrap_err().to_string();
        assert!(err.contains("leads outside the task directory"), "{err}");

        // A planted link where the worker writes is replaced, its target untouched.
        link(root.join("secret").to_str().unwrap(), ".marker");
        replace_file(&task, Path::new(".marker"), b"42").unwrap();
        assert_eq!(std::fs::read_to_string(root.join("secret")).unwrap(), "secret");
        assert_eq!(read(".marker").as_deref(), Some("42"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn listing_and_removing_never_follow_a_link_out() {
        let root = std::env::temp_dir().join(format!("drover-beneath-rm-{}", std::process::id()));
        let (task, outside) = (root.join("task"), root.join("outside"));
        std::fs::create_dir_all(task.join("wd/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep.txt"), "keep").unwrap();
        std::fs::write(task.join("wd/sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(&outside, task.join("wd/out")).unwrap();
        let names: Vec<String> = list(&task, Path::new(""), true, 100).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["wd", "wd/out", "wd/sub", "wd/sub/a.txt"]);
        assert_eq!(list(&task, Path::new("wd"), true, 2).unwrap().len(), 2, "the limit holds");
        assert!(list(&task, Path::new("wd/out"), false, 100).is_err(), "a link out is not listed through");
        assert!(matches!(stat(&task, Path::new("wd/nothing")), Err(Error::NotFound { .. })));
        assert!(remove(&task, Path::new("wd/out/keep.txt"), false).is_err());
        assert!(matches!(remove(&task, Path::new("wd/sub"), false), Err(Error::State(_))), "not empty");
        // A link is removed, never what it points at; a directory goes with what is in it.
        remove(&task, Path::new("wd/out"), true).unwrap();
        remove(&task, Path::new("wd/sub"), true).unwrap();
        assert!(remove(&task, Path::new(""), true).is_err(), "the directory itself stays");
        assert_eq!(std::fs::read_to_string(outside.join("keep.txt")).unwrap(), "keep");
        assert_eq!(list(&task, Path::new(""), true, 100).unwrap().len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
