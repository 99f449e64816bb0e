//! Pool records: create (idempotent), read, list, delete.

use super::scripts::REPLACE_RECORD;
use super::StatusStore;
use crate::model::node::NodeState;
use crate::model::{now_ms, rfc3339, CloudPool, PoolAddParameter};
use crate::signing::Kind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct PoolRecord {
    spec: PoolAddParameter,
    ctime: i64,
    /// The spec's signature (over its JSON as this build writes it), when the account signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
    /// The job whose auto pool it is, when it goes once that job has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto_job: Option<String>,
}

impl StatusStore {
    /// Records a pool. Creating the same pool again is a no-op; a different spec under an existing
    /// id is refused.
    pub async fn create_pool(&self, pool: &PoolAddParameter) -> Result<()> {
        self.create_pool_for(pool, None).await
    }

    /// Records a pool, as [`StatusStore::create_pool`]; with `auto_job`, it is that job's auto
    /// pool, which goes once the job has completed (`drover-monitor` removes it).
    pub async fn create_pool_for(&self, pool: &PoolAddParameter, auto_job: Option<&str>) -> Result<()> {
        crate::autoscale::validate_pool(pool)?;
        let auto_job = auto_job.map(String::from);
        let spec = self.sealed_spec(pool, &format!("pool {:?}", pool.id))?;
        let record = PoolRecord { sig: self.pool_sig(&spec)?, spec, ctime: now_ms(), auto_job };
        let record = serde_json::to_string(&record).map_err(|e| Error::Internal(format!("pool {:?}: {e}", pool.id)))?;
        let (created, _): (bool, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.keys.pool(&pool.id))
            .arg(&record)
            .arg("NX")
            .cmd("SADD")
            .arg(self.keys.pools())
            .arg(&pool.id)
            .query_async(&mut self.con())
            .await?;
        if !created {
            let existing = self.get_pool(&pool.id).await?;
            if !self.same_spec(&existing.spec, pool) {
                return Err(Error::Conflict { kind: "pool", id: pool.id.clone() });
            }
        }
        Ok(())
    }

    /// One pool.
    pub async fn get_pool(&self, pool: &str) -> Result<CloudPool> {
        self.read_pool(pool, false).await
    }

    /// The pool as a node may act on it (its start task, its user accounts): its spec verifies
    /// against the account's signing keys (when it has them) and is valid, else [`Error::Refused`].
    pub async fn get_pool_checked(&self, pool: &str) -> Result<CloudPool> {
        self.read_pool(pool, true).await
    }

    /// The signature of a pool's spec, when the account signs.
    fn pool_sig(&self, pool: &PoolAddParameter) -> Result<Option<String>> {
        let Some(signer) = self.signer() else { return Ok(None) };
        let text = serde_json::to_string(pool).map_err(|e| Error::Internal(format!("pool {:?}: {e}", pool.id)))?;
        Ok(Some(signer.sign(Kind::Pool, &[&pool.id, &text])))
    }

    /// The stored record of `pool`; `checked`: only if it verifies and is valid.
    async fn pool_record(&self, pool: &str, checked: bool) -> Result<PoolRecord> {
        let raw: Option<String> = redis::cmd("GET").arg(self.keys.pool(pool)).query_async(&mut self.con()).await?;
        let raw = raw.ok_or_else(|| Error::NotFound { kind: "pool", id: pool.into() })?;
        self.read_pool_record(pool, &raw, checked)
    }

    /// `raw` read as `pool`'s record; `checked`: only if it verifies and is valid.
    fn read_pool_record(&self, pool: &str, raw: &str, checked: bool) -> Result<PoolRecord> {
        let r: PoolRecord = serde_json::from_str(raw)
            .map_err(|e| Error::Corrupt(format!("stored pool {pool:?} is unreadable: {e}")))?;
        if checked {
            let refused = |e: String| Error::Refused(format!("pool {pool:?}'s record was refused: {e}"));
            if let Some(signer) = self.signer() {
                let text = serde_json::to_string(&r.spec).map_err(|e| refused(e.to_string()))?;
                signer.verify(Kind::Pool, &[pool, &text], r.sig.as_deref()).map_err(refused)?;
            }
            crate::autoscale::validate_pool(&r.spec).map_err(|e| refused(e.to_string()))?;
        }
        Ok(r)
    }

    async fn read_pool(&self, pool: &str, checked: bool) -> Result<CloudPool> {
        let r = self.pool_record(pool, checked).await?;
        Ok(CloudPool {
            spec: r.spec,
            state: "active",
            creation_time: rfc3339(r.ctime),
            current_dedicated_nodes: None,
            allocation_state: None,
            auto_scale_run: None,
            auto_pool_job: r.auto_job,
            ctime_ms: r.ctime,
        })
    }

    /// A pool with its live node count and last autoscale evaluation.
    pub async fn pool_status(&self, pool: &str) -> Result<CloudPool> {
        let mut p = self.get_pool(pool).await?;
        let nodes = self.list_nodes(pool).await?;
        p.current_dedicated_nodes = Some(nodes.iter().filter(|n| n.state != NodeState::Offline).count() as u32);
        p.auto_scale_run = self.last_autoscale(pool).await?;
        // Steady once the live nodes are what the pool asks for (its formula's last target, or
        // targetDedicatedNodes); resizing meanwhile.
        let target = match p.spec.enable_auto_scale {
            Some(true) => p.auto_scale_run.as_ref().and_then(|r| r.target_dedicated_nodes),
            _ => p.spec.target_dedicated_nodes,
        };
        let steady = target.is_none_or(|t| Some(t) == p.current_dedicated_nodes);
        p.allocation_state = Some(if steady { "steady" } else { "resizing" });
        Ok(p)
    }

    /// Turns autoscaling on (with a formula and an evaluation interval) or off.
    pub async fn set_autoscale(
        &self,
        pool: &str,
        formula: Option<&str>,
        interval: Option<crate::model::IsoDuration>,
    ) -> Result<CloudPool> {
        self.change_pool(pool, |spec| {
            spec.enable_auto_scale = Some(formula.is_some());
            spec.auto_scale_formula = formula.map(str::to_string);
            spec.auto_scale_evaluation_interval = interval.or(spec.auto_scale_evaluation_interval);
            spec.target_dedicated_nodes = None;
            Ok(())
        })
        .await
    }

    /// Sets how many nodes the pool asks for (Azure's resize); refused while a formula scales
    /// it.
    pub async fn resize_pool(&self, pool: &str, target: u32) -> Result<CloudPool> {
        self.change_pool(pool, |spec| {
            if spec.enable_auto_scale == Some(true) {
                return Err(Error::State(format!(
                    "pool {pool:?} scales with its autoscale formula: disable autoscaling to resize it"
                )));
            }
            spec.target_dedicated_nodes = Some(target);
            Ok(())
        })
        .await
    }

    /// Changes a pool's spec with `change`, checks it, seals its SAS tokens and signs it again,
    /// in one transition fenced by the record the change was made from (a concurrent change
    /// makes this one start over from the new record).
    pub(crate) async fn change_pool(
        &self,
        pool: &str,
        mut change: impl FnMut(&mut PoolAddParameter) -> Result<()>,
    ) -> Result<CloudPool> {
        for _ in 0..5 {
            let raw: Option<String> = redis::cmd("GET").arg(self.keys.pool(pool)).query_async(&mut self.con()).await?;
            let raw = raw.ok_or_else(|| Error::NotFound { kind: "pool", id: pool.into() })?;
            // A record changed behind the account's back is not signed again.
            let mut r = self.read_pool_record(pool, &raw, self.signer().is_some())?;
            change(&mut r.spec)?;
            crate::autoscale::validate_pool(&r.spec)?;
            r.spec = self.sealed_spec(&r.spec, &format!("pool {pool:?}"))?;
            r.sig = self.pool_sig(&r.spec)?;
            let record = serde_json::to_string(&r).map_err(|e| Error::Internal(format!("pool {pool:?}: {e}")))?;
            let mut inv = REPLACE_RECORD.prepare();
            inv.key(self.keys.pool(pool)).arg(&raw).arg(record);
            let reply = REPLACE_RECORD.run(inv, &mut self.con()).await?;
            match reply.head.as_str() {
                "ok" => return self.pool_status(pool).await,
                "stale" => continue,
                "gone" => return Err(Error::NotFound { kind: "pool", id: pool.into() }),
                _ => return Err(reply.unexpected()),
            }
        }
        Err(Error::State(format!("pool {pool:?} kept changing while it was changed; try again")))
    }

    /// Every pool of the account, sorted by id.
    pub async fn list_pools(&self) -> Result<Vec<CloudPool>> {
        let mut ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.pools()).query_async(&mut self.con()).await?;
        ids.sort();
        let mut pools = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get_pool(&id).await {
                Ok(p) => pools.push(p),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(pools)
    }

    /// Forgets a pool.
    pub async fn delete_pool(&self, pool: &str) -> Result<()> {
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.keys.pool(pool))
            .cmd("UNLINK")
            .arg(&["samples", "autoscale", "jobs", "joins"].map(|p| self.keys.pool_part(pool, p)))
            .ignore()
            .cmd("SREM")
            .arg(self.keys.pools())
            .arg(pool)
            .query_async(&mut self.con())
            .await?;
        if deleted == 0 {
            return Err(Error::NotFound { kind: "pool", id: pool.into() });
        }
        Ok(())
    }
}
