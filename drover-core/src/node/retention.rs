//! Task directories stay on the node for the task's `retentionTime` (default 7 days), then go.
//!
//! When an attempt ends, its directory gets a marker file holding the expiry time; a sweep every
//! minute removes the expired directories, including those left by an earlier run of the node.

use crate::staging::beneath::{read_small, replace_file};
use std::path::Path;
use std::time::Duration;

/// How long a task directory is kept when the task does not say.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const MARKER: &str = ".drover-expires";

/// Marks `task_dir` for removal `retention` from now.
pub(crate) async fn mark(task_dir: &Path, retention: Duration) {
    let expires = crate::model::now_ms().saturating_add(retention.as_millis().min(i64::MAX as u128) as i64);
    // Written afresh: a link the task planted in its place is removed, never followed.
    let dir = task_dir.to_path_buf();
    let written =
        tokio::task::spawn_blocking(move || replace_file(&dir, Path::new(MARKER), expires.to_string().as_bytes()));
    if let Ok(Err(e)) = written.await {
        tracing::warn!(dir = %task_dir.display(), error = %e, "cannot write the retention marker");
    }
}

/// Removes every expired task directory under `<work_dir>/<account>/jobs/*/*`; returns how many.
pub(crate) fn sweep(jobs_dir: &Path) -> usize {
    let now = crate::model::now_ms();
    let mut removed = 0;
    let Ok(jobs) = std::fs::read_dir(jobs_dir) else { return 0 };
    for job in jobs.flatten() {
        let Ok(tasks) = std::fs::read_dir(job.path()) else { continue };
        // Only real directories, and a marker read without following a link: nothing a task
        // planted leads the sweep elsewhere (remove_dir_all does not follow links either).
        for task in tasks.flatten().filter(|t| t.file_type().is_ok_and(|k| k.is_dir())) {
            let expired = read_small(&task.path(), Path::new(MARKER), 32)
                .and_then(|s| s.trim().parse::<i64>().ok())
                .is_some_and(|at| at <= now);
            if expired && std::fs::remove_dir_all(task.path()).is_ok() {
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

    #[tokio::test]
    async fn expired_task_directories_are_swept() {
        let jobs = std::env::temp_dir().join(format!("drover-retention-{}", std::process::id()));
        let (old, fresh, unmarked) = (jobs.join("j/old"), jobs.join("j/fresh"), jobs.join("k/running"));
        for d in [&old, &fresh, &unmarked] {
            std::fs::create_dir_all(d.join("wd")).unwrap();
        }
        mark(&old, Duration::ZERO).await;
        mark(&fresh, Duration::from_secs(3600)).await;
        // Planted by tasks: a link to an expired directory outside, a marker that is a link.
        let outside = std::env::temp_dir().join(format!("drover-retention-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        mark(&outside, Duration::ZERO).await;
        std::os::unix::fs::symlink(&outside, jobs.join("j/planted")).unwrap();
        let linked = jobs.join("k/linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(outside.join(MARKER), linked.join(MARKER)).unwrap();
        assert_eq!(sweep(&jobs), 1);
        assert!(!old.exists() && fresh.exists() && unmarked.exists() && linked.exists());
        assert!(outside.join(MARKER).exists(), "the sweep stayed in the work directory");
        std::fs::remove_dir_all(&jobs).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
