//! Application packages: which versions of which applications the account has, and its default
//! version of each (the last uploaded). The package files themselves live in storage.

use super::StatusStore;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One stored version of an application package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageVersion {
    pub version: String,
    /// The package file's name in storage (its format follows from it: .zip, .tar.gz, .tgz).
    pub file: String,
    pub size: u64,
    pub last_activation_time: String,
    /// The SHA-256 of the package file at upload (hex); a node refuses a file that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The SHA-256 of the file at `path`, in hex (read in a stream).
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// An application and its versions (Azure's ApplicationSummary, with the versions' details).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub id: String,
    pub default_version: Option<String>,
    pub versions: Vec<PackageVersion>,
}

impl StatusStore {
    /// Records an uploaded package version; it becomes the application's default version.
    pub async fn add_package(&self, application: &str, package: &PackageVersion) -> Result<()> {
        let key = self.keys.application(application);
        let _: () = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(format!("v:{}", package.version))
            .arg(serde_json::to_string(package).unwrap_or_default())
            .arg("default")
            .arg(&package.version)
            .ignore()
            .cmd("SADD")
            .arg(self.keys.applications())
            .arg(application)
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// A version of a package (`None`: the application's default version).
    pub async fn package(&self, application: &str, version: Option<&str>) -> Result<PackageVersion> {
        let key = self.keys.application(application);
        let version = match version {
            Some(v) => v.to_string(),
            None => {
                let default: Option<String> =
                    redis::cmd("HGET").arg(&key).arg("default").query_async(&mut self.con()).await?;
                default.ok_or_else(|| Error::NotFound { kind: "application", id: application.into() })?
            }
        };
        let raw: Option<String> =
            redis::cmd("HGET").arg(&key).arg(format!("v:{version}")).query_async(&mut self.con()).await?;
        let raw =
            raw.ok_or_else(|| Error::NotFound { kind: "application package", id: format!("{application} {version}") })?;
        serde_json::from_str(&raw).map_err(|e| Error::Corrupt(format!("stored package {application} {version}: {e}")))
    }

    /// Every application of the account with its versions, sorted.
    pub async fn applications(&self) -> Result<Vec<Application>> {
        let mut ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.applications()).query_async(&mut self.con()).await?;
        ids.sort();
        let mut apps = Vec::with_capacity(ids.len());
        for id in ids {
            let fields: HashMap<String, String> =
                redis::cmd("HGETALL").arg(self.keys.application(&id)).query_async(&mut self.con()).await?;
            let mut versions: Vec<PackageVersion> = fields
                .iter()
                .filter(|(k, _)| k.starts_with("v:"))
                .filter_map(|(_, v)| serde_json::from_str(v).ok())
                .collect();
            versions.sort_by(|a, b| a.version.cmp(&b.version));
            apps.push(Application { default_version: fields.get("default").cloned(), id, versions });
        }
        Ok(apps)
    }
}
