//! A pool's autoscale records: its backlog samples (`pool:P:samples`) and its last run (`pool:P:autoscale`).

use super::StatusStore;
use crate::autoscale::{Sample, MAX_SAMPLES};
use crate::model::now_ms;
use crate::model::pool::AutoScaleRun;
use crate::Result;

impl StatusStore {
    /// The backlog of a pool now: the counters of its active jobs, minus their held tasks (one
    /// round trip; O(active jobs of the pool), never a scan of tasks).
    pub async fn pool_sample(&self, pool: &str) -> Result<Sample> {
        let jobs = self.pool_jobs(pool).await?;
        let mut sample = Sample { t: now_ms(), ..Default::default() };
        if jobs.is_empty() {
            return Ok(sample);
        }
        let rows = self.job_backlogs(&jobs).await?;
        for b in rows {
            let held = b.held.min(b.active);
            sample.active += b.active - held;
            sample.running += b.running;
            sample.active_slots += b.active_slots.saturating_sub(held);
            sample.running_slots += b.running_slots;
        }
        Ok(sample)
    }

    /// Keeps a sample of a pool (the last [`MAX_SAMPLES`]), so that `pool autoscale evaluate`
    /// sees the history the autoscaler sees.
    pub async fn record_sample(&self, pool: &str, sample: &Sample) -> Result<()> {
        let key = self.keys.pool_part(pool, "samples");
        let _: () = redis::pipe()
            .cmd("LPUSH")
            .arg(&key)
            .arg(serde_json::to_string(sample).unwrap_or_default())
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(MAX_SAMPLES - 1)
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// A pool's recorded samples, oldest first.
    pub async fn samples(&self, pool: &str) -> Result<Vec<Sample>> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.pool_part(pool, "samples"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        Ok(raw.iter().rev().filter_map(|s| serde_json::from_str(s).ok()).collect())
    }

    /// Records the last autoscale evaluation of a pool.
    pub async fn record_autoscale(&self, pool: &str, run: &AutoScaleRun) -> Result<()> {
        let _: () = redis::cmd("SET")
            .arg(self.keys.pool_part(pool, "autoscale"))
            .arg(serde_json::to_string(run).unwrap_or_default())
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// The last autoscale evaluation of a pool, if any.
    pub async fn last_autoscale(&self, pool: &str) -> Result<Option<AutoScaleRun>> {
        let raw: Option<String> =
            redis::cmd("GET").arg(self.keys.pool_part(pool, "autoscale")).query_async(&mut self.con()).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }
}
