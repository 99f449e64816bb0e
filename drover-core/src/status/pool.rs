//! Pool records: create (idempotent), read, list, delete.

use super::StatusStore;
use crate::model::node::NodeState;
use crate::model::{now_ms, rfc3339, CloudPool, PoolAddParameter};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct PoolRecord {
    spec: PoolAddParameter,
    ctime: i64,
}

impl StatusStore {
    /// Records a pool. Creating the same pool again is a no-op; a different spec under an existing
    /// id is refused.
    pub async fn create_pool(&self, pool: &PoolAddParameter) -> Result<()> {
        crate::autoscale::validate_pool(pool)?;
        let record = serde_json::to_string(&PoolRecord { spec: pool.clone(), ctime: now_ms() }).unwrap_or_default();
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
            if existing.spec != *pool {
                return Err(Error::Conflict { kind: "pool", id: pool.id.clone() });
            }
        }
        Ok(())
    }

    /// One pool.
    pub async fn get_pool(&self, pool: &str) -> Result<CloudPool> {
        let raw: Option<String> = redis::cmd("GET").arg(self.keys.pool(pool)).query_async(&mut self.con()).await?;
        let raw = raw.ok_or_else(|| Error::NotFound { kind: "pool", id: pool.into() })?;
        let r: PoolRecord = serde_json::from_str(&raw)
            .map_err(|e| Error::Corrupt(format!("stored pool {pool:?} is unreadable: {e}")))?;
        Ok(CloudPool {
            spec: r.spec,
            state: "active",
            creation_time: rfc3339(r.ctime),
            current_dedicated_nodes: None,
            auto_scale_run: None,
        })
    }

    /// A pool with its live node count and last autoscale evaluation.
    pub async fn pool_status(&self, pool: &str) -> Result<CloudPool> {
        let mut p = self.get_pool(pool).await?;
        let nodes = self.list_nodes(pool).await?;
        p.current_dedicated_nodes = Some(nodes.iter().filter(|n| n.state != NodeState::Offline).count() as u32);
        p.auto_scale_run = self.last_autoscale(pool).await?;
        Ok(p)
    }

    /// Turns autoscaling on (with a formula and an evaluation interval) or off.
    pub async fn set_autoscale(
        &self,
        pool: &str,
        formula: Option<&str>,
        interval: Option<crate::model::IsoDuration>,
    ) -> Result<CloudPool> {
        let raw: Option<String> = redis::cmd("GET").arg(self.keys.pool(pool)).query_async(&mut self.con()).await?;
        let raw = raw.ok_or_else(|| Error::NotFound { kind: "pool", id: pool.into() })?;
        let mut r: PoolRecord = serde_json::from_str(&raw)
            .map_err(|e| Error::Corrupt(format!("stored pool {pool:?} is unreadable: {e}")))?;
        r.spec.enable_auto_scale = Some(formula.is_some());
        r.spec.auto_scale_formula = formula.map(str::to_string);
        r.spec.auto_scale_evaluation_interval = interval.or(r.spec.auto_scale_evaluation_interval);
        r.spec.target_dedicated_nodes = None;
        crate::autoscale::validate_pool(&r.spec)?;
        let record = serde_json::to_string(&r).unwrap_or_default();
        let _: () = redis::cmd("SET").arg(self.keys.pool(pool)).arg(record).query_async(&mut self.con()).await?;
        self.pool_status(pool).await
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
            .arg(&["samples", "autoscale", "jobs"].map(|p| self.keys.pool_part(pool, p)))
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
