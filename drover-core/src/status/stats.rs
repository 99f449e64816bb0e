//! Pool statistics for the monitor: the monotonic counters and histograms the transitions keep
//! (`drover:A:pool:P:stats`), and the age of the oldest queued task. Every read is O(1) per pool
//! or per active job, never a scan of tasks.

use super::scripts::BUCKETS_MS;
use super::StatusStore;
use crate::Result;
use std::collections::HashMap;

/// A histogram as the scripts keep it: a count per bucket (not cumulative; one more than
/// [`BUCKETS_MS`] for what is above the last bound), the sum in ms, and the count (their sum).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum_ms: u64,
    pub count: u64,
}

/// A pool's statistics since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Completed tasks by (result, failure code): `("success", "")`, `("failure", "FailureExitCode")`.
    pub completed: Vec<(String, String, u64)>,
    pub retries: u64,
    pub requeues: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Histogram,
    pub queue_wait: Histogram,
}

impl PoolStats {
    fn from_fields(f: &HashMap<String, u64>) -> Self {
        let get = |k: &str| f.get(k).copied().unwrap_or(0);
        let histogram = |name: &str| {
            let buckets: Vec<u64> = (1..=BUCKETS_MS.len() + 1).map(|i| get(&format!("{name}.b{i}"))).collect();
            // The scripts keep no count: it is the sum of the buckets.
            Histogram { count: buckets.iter().sum(), buckets, sum_ms: get(&format!("{name}.sum")) }
        };
        let mut completed: Vec<(String, String, u64)> = f
            .iter()
            .filter_map(|(k, n)| {
                let rest = k.strip_prefix("done.")?;
                Some(match rest.split_once('.') {
                    Some((result, code)) => (result.to_string(), code.to_string(), *n),
                    None => (rest.to_string(), String::new(), *n),
                })
            })
            .collect();
        completed.sort();
        PoolStats {
            completed,
            retries: get("retries"),
            requeues: get("requeues"),
            bytes_in: get("bytes.in"),
            bytes_out: get("bytes.out"),
            duration: histogram("dur"),
            queue_wait: histogram("wait"),
        }
    }
}

impl StatusStore {
    /// A pool's statistics (one read).
    pub async fn pool_stats(&self, pool: &str) -> Result<PoolStats> {
        let f: HashMap<String, u64> =
            redis::cmd("HGETALL").arg(self.keys.pool_part(pool, "stats")).query_async(&mut self.con()).await?;
        Ok(PoolStats::from_fields(&f))
    }

    /// For each job, since when (ms) its oldest queued task has waited, if it has one (one
    /// round trip).
    pub async fn oldest_queued(&self, jobs: &[String]) -> Result<Vec<Option<i64>>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for j in jobs {
            pipe.cmd("ZRANGE").arg(self.keys.job(j).part("queued")).arg(0).arg(0).arg("WITHSCORES");
        }
        let rows: Vec<Vec<(String, f64)>> = pipe.query_async(&mut self.con()).await?;
        Ok(rows.into_iter().map(|r| r.first().map(|(_, score)| *score as i64)).collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_scripts_fields() {
        let f = [
            ("done.success", 5),
            ("done.failure.FailureExitCode", 2),
            ("dur.b1", 3),
            ("dur.b19", 1),
            ("dur.sum", 9000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let s = super::PoolStats::from_fields(&f);
        assert_eq!(
            s.completed,
            [("failure".into(), "FailureExitCode".into(), 2), ("success".into(), String::new(), 5)]
        );
        assert_eq!((s.duration.buckets[0], s.duration.buckets[18], s.duration.sum_ms), (3, 1, 9000));
    }
}
