//! Opening a task's files without leaving its directory: whatever symlinks, `..` or special files
//! the task left behind, the worker reads and writes only beneath the directory it names
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
}
