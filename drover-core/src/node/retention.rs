//! Task directories stay on the node for the task's `retentionTime` (default 7 days), then go.
//!
//! When an attempt ends, its directory's modification time is set to then; a task with a
//! retention time of its own also gets a marker file holding its expiry time. A sweep every
//! minute removes the expired directories (by their marker, else their modification time),
//! including those left by an earlier run of the node, never one whose task runs here.

use crate::staging::beneath::{read_small, replace_file};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// How long a task directory is kept when the task does not say.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const MARKER: &str = ".drover-expires";

/// Marks `task_dir` for removal `retention` from now: a call or two, made in place (a trip to the
/// blocking pool would cost more).
pub(crate) fn mark(task_dir: &Path, retention: Duration) {
    let marked = if retention == DEFAULT_RETENTION {
        // The directory is the worker's (its parent is not the task's to change): its time is
        // the attempt's end, no file needed.
        let now = nix::sys::time::TimeSpec::from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default(),
        );
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            task_dir,
            &now,
            &now,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)
    } else {
        let expires = crate::model::now_ms().saturating_add(retention.as_millis().min(i64::MAX as u128) as i64);
        // Written afresh: a link the task planted in its place is removed, never followed.
        replace_file(task_dir, Path::new(MARKER), expires.to_string().as_bytes()).map_err(std::io::Error::other)
    };
    if let Err(e) = marked {
        tracing::warn!(dir = %task_dir.display(), error = %e, "cannot mark the task directory's retention");
    }
}

/// Removes every expired task directory under `<work_dir>/<account>/jobs/*/*` but those of the
/// `running` (job, task) pairs; returns how many.
pub(crate) fn sweep(jobs_dir: &Path, running: &HashSet<(String, String)>) -> usize {
    let now = crate::model::now_ms();
    let mut removed = 0;
    let Ok(jobs) = std::fs::read_dir(jobs_dir) else { return 0 };
    for job in jobs.flatten() {
        let Ok(tasks) = std::fs::read_dir(job.path()) else { continue };
        let job_id = job.file_name().to_string_lossy().into_owned();
        // Only real directories, and a marker read without following a link: nothing a task
        // planted leads the sweep elsewhere (remove_dir_all does not follow links either).
        for task in tasks.flatten().filter(|t| t.file_type().is_ok_and(|k| k.is_dir())) {
            if running.contains(&(job_id.clone(), task.file_name().to_string_lossy().into_owned())) {
                continue;
            }
            let marked = read_small(&task.path(), Path::new(MARKER), 32).and_then(|s| s.trim().parse::<i64>().ok());
            let expires = marked.or_else(|| {
                let modified = std::fs::symlink_metadata(task.path()).and_then(|m| m.modified()).ok()?;
                let at = modified.duration_since(std::time::UNIX_EPOCH).ok()?.saturating_add(DEFAULT_RETENTION);
                i64::try_from(at.as_millis()).ok()
            });
            if expires.is_some_and(|at| at <= now) && std::fs::remove_dir_all(task.path()).is_ok() {
                removed += 1;
            }
        }
        let _ = std::fs::remove_dir(job.path()); // only succeeds once empty
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_task_directories_are_swept() {
        let jobs = std::env::temp_dir().join(format!("drover-retention-{}", std::process::id()));
        let (old, fresh, unmarked) = (jobs.join("j/old"), jobs.join("j/fresh"), jobs.join("k/running"));
        for d in [&old, &fresh, &unmarked] {
            std::fs::create_dir_all(d.join("wd")).unwrap();
        }
        mark(&old, Duration::ZERO);
        mark(&fresh, Duration::from_secs(3600));
        // Planted by tasks: a link to an expired directory outside, a marker that is a link.
        let outside = std::env::temp_dir().join(format!("drover-retention-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        mark(&outside, Duration::ZERO);
        std::os::unix::fs::symlink(&outside, jobs.join("j/planted")).unwrap();
        let linked = jobs.join("k/linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(outside.join(MARKER), linked.join(MARKER)).unwrap();
        // An old directory without a marker goes by its time, unless its task runs here.
        let (aged, busy) = (jobs.join("k/aged"), jobs.join("k/busy"));
        for d in [&aged, &busy] {
            std::fs::create_dir_all(d).unwrap();
            let old = nix::sys::time::TimeSpec::new(1_000_000, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                d.as_path(),
                &old,
                &old,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        let running = HashSet::from([("k".to_string(), "busy".to_string())]);
        assert_eq!(sweep(&jobs, &running), 2);
        assert!(!aged.exists() && busy.exists());
        assert!(!old.exists() && fresh.exists() && unmarked.exists() && linked.exists());
        // The default retention marks by time: no file.
        mark(&fresh, DEFAULT_RETENTION);
        assert!(fresh.join(MARKER).exists(), "the earlier marker stays");
        mark(&unmarked, DEFAULT_RETENTION);
        assert!(!unmarked.join(MARKER).exists());
        assert!(outside.join(MARKER).exists(), "the sweep stayed in the work directory");
        std::fs::remove_dir_all(&jobs).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
