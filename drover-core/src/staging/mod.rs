//! Staging: moving files between storage and a task's directory.
//!
//! Resource files come from S3 (`s3://bucket/key`, a container prefix, or a prefix in the
//! account's bucket), Azure Blob Storage containers (a SAS URL) or plain HTTP(S); output files
//! go to S3 or to Azure Blob Storage. Transfers stream to and from disk,
//! retry transient errors and time out when a peer stalls. A download lands under a temporary
//! name and is renamed into place, so a task never sees a half-written input.

pub mod beneath;
mod blob;
mod http;
mod outputs;
mod s3;

pub use outputs::{matching_files, OutputMatch};
pub use s3::S3Store;

use crate::model::task::{check_relative, ResourceFile};
use crate::model::{BlobUrl, Container, S3Url};
use crate::{Config, Error, Result};
use std::path::{Path, PathBuf};

/// Everything staging needs: the S3 store, an HTTP client, and where the account's storage is.
#[derive(Clone)]
pub struct Staging {
    pub s3: S3Store,
    http: reqwest::Client,
    bucket: String,
    account: String,
    retry_budget: std::time::Duration,
    /// Where tasks may read and write besides the account's own prefix (empty: anywhere).
    allowed: Vec<S3Url>,
    /// The account's keys, which open sealed SAS tokens ([`crate::sas`]).
    keys: Option<std::sync::Arc<crate::signing::Signer>>,
}

/// How long a transfer keeps retrying while storage is unavailable, unless set otherwise.
pub const DEFAULT_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

impl Staging {
    /// Staging for the configured account.
    pub async fn new(config: &Config) -> Result<Self> {
        Ok(Staging {
            s3: S3Store::connect(config).await?,
            http: http::client(config.ca_file.as_deref())?,
            bucket: config.bucket.clone(),
            account: config.account.clone(),
            retry_budget: DEFAULT_RETRY_BUDGET,
            allowed: Vec::new(),
            keys: match &config.signing_key_file {
                Some(path) => Some(std::sync::Arc::new(crate::signing::Signer::load(path, &config.account)?)),
                None => None,
            },
        })
    }

    /// Confines tasks' sources and destinations to `places` (`s3://bucket[/prefix]`) and the
    /// account's own prefix of its bucket; none: no confinement.
    pub fn with_allowed(mut self, places: &[String]) -> Result<Self> {
        for (i, place) in places.iter().enumerate() {
            let url = S3Url::parse(place).map_err(|e| Error::invalid(format!("storage-allow {}: {e}", i + 1)))?;
            self.allowed.push(url);
        }
        Ok(self)
    }

    /// Refuses `bucket/key` (a task's source or destination, `what`) outside the allowed places.
    pub fn check_reach(&self, what: &str, bucket: &str, key: &str) -> Result<()> {
        if self.allowed.is_empty() {
            return Ok(());
        }
        let under = |prefix: &str| {
            let prefix = prefix.trim_end_matches('/');
            prefix.is_empty() || key == prefix || key.starts_with(&format!("{prefix}/"))
        };
        let own = bucket == self.bucket && under(&self.account);
        if own || self.allowed.iter().any(|a| a.bucket == bucket && under(&a.key)) {
            return Ok(());
        }
        Err(Error::Storage(format!(
            "{what}: s3://{bucket}/{key} is outside what this node lets tasks reach (its --storage-allow and s3://{}/{}/)",
            self.bucket, self.account
        )))
    }

    /// Refuses an Azure Blob location when this node confines tasks to S3 places
    /// (`--storage-allow`).
    pub fn check_blob_reach(&self, what: &str, blob: &BlobUrl) -> Result<()> {
        if self.allowed.is_empty() {
            return Ok(());
        }
        Err(Error::Storage(format!(
            "{what}: {blob} is outside what this node lets tasks reach (its --storage-allow and s3://{}/{}/)",
            self.bucket, self.account
        )))
    }

    /// Uploads the task's file `rel` (opened beneath `dir`) to `dest`, retrying while storage
    /// is unavailable, after checking that the node lets tasks reach it.
    pub async fn upload_to(&self, dir: &Path, rel: &Path, dest: &Container) -> Result<u64> {
        match dest {
            Container::S3(u) => {
                self.check_reach("destination", &u.bucket, &u.key)?;
                self.upload(dir, rel, &u.bucket, &u.key).await
            }
            Container::Blob(b) => {
                self.check_blob_reach("destination", b)?;
                let b = &self.opened(b, "destination")?;
                self.retrying(|| async { blob::upload(&self.http, beneath::open_file(dir, rel)?, b).await }).await
            }
        }
    }

    /// `blob` with its SAS opened, when it was sealed.
    fn opened(&self, blob: &BlobUrl, what: &str) -> Result<BlobUrl> {
        let sas = crate::sas::open_query(&blob.sas, self.keys.as_deref(), what)?.into_owned();
        Ok(BlobUrl { sas, ..blob.clone() })
    }

    /// Keeps retrying transfers for `budget` while storage is unavailable.
    pub fn with_retry_budget(mut self, budget: std::time::Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Runs `transfer` until it succeeds, fails for good, or storage stayed unavailable past the
    /// retry budget (the one retry policy, [`crate::retry`]).
    pub async fn retrying<T, F, Fut>(&self, transfer: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let patience = crate::retry::Patience::For(self.retry_budget);
        match crate::retry::transient("storage transfer", patience, || false, transfer).await {
            Err(Error::StorageUnavailable(e)) => {
                Err(Error::StorageUnavailable(format!("{e} (gave up after {:?})", self.retry_budget)))
            }
            other => other,
        }
    }

    /// Uploads the file `rel` beneath `dir` to `bucket/key`, retrying while storage is
    /// unavailable; a path that leads outside `dir` (through a link the task made) is refused.
    pub async fn upload(&self, dir: &Path, rel: &Path, bucket: &str, key: &str) -> Result<u64> {
        self.retrying(|| async { self.s3.upload(beneath::open_file(dir, rel)?, bucket, key).await }).await
    }

    /// Uploads the operator's own file `src` (an application package), retrying likewise.
    pub async fn upload_path(&self, src: &Path, bucket: &str, key: &str) -> Result<u64> {
        self.retrying(|| async {
            let file = std::fs::File::open(src).map_err(|e| Error::io(format!("read {}", src.display()), e))?;
            self.s3.upload(file, bucket, key).await
        })
        .await
    }

    /// Where a task's own files (stdout.txt, stderr.txt) are kept in the account's bucket.
    pub fn task_files(&self, job: &str, task: &str) -> S3Url {
        S3Url { bucket: self.bucket.clone(), key: format!("{}/jobs/{job}/{task}", self.account) }
    }

    /// Where a version of an application package is stored in the account's bucket.
    pub fn application_package(&self, application: &str, version: &str, file: &str) -> S3Url {
        S3Url {
            bucket: self.bucket.clone(),
            key: format!("{}/applications/{application}/{version}/{file}", self.account),
        }
    }

    /// The container an `autoStorageContainerName` names: a prefix in the account's bucket.
    pub fn auto_storage(&self, name: &str) -> S3Url {
        S3Url { bucket: self.bucket.clone(), key: format!("{}/{}", self.account, name.trim_matches('/')) }
    }

    /// Downloads one resource file (or every object of a container) into `wd`, retrying while
    /// storage is unavailable, refused past `limit` bytes. Returns bytes written.
    pub async fn stage_in(&self, rf: &ResourceFile, wd: &Path, limit: u64) -> Result<u64> {
        self.retrying(|| self.try_stage_in(rf, wd, limit)).await
    }

    async fn try_stage_in(&self, rf: &ResourceFile, wd: &Path, limit: u64) -> Result<u64> {
        let file_path = rf.file_path.as_deref().unwrap_or("");
        let mut bytes = 0;
        if let Some(url) = &rf.http_url {
            let dest = wd.join(file_path);
            bytes += if url.starts_with("s3://") {
                let u = S3Url::parse(url).map_err(Error::invalid)?;
                self.check_reach("httpUrl", &u.bucket, &u.key)?;
                self.s3.download_within(&u.bucket, &u.key, &dest, limit).await?
            } else {
                let url = crate::sas::open_url(url, self.keys.as_deref(), "httpUrl")?;
                http::download(&self.http, &url, &dest, limit).await?
            };
            set_mode(&dest, rf.mode()).await?;
            return Ok(bytes);
        }
        let container = match (&rf.storage_container_url, &rf.auto_storage_container_name) {
            (Some(url), _) => match Container::parse(url).map_err(Error::invalid)? {
                Container::S3(u) => u,
                Container::Blob(b) => return self.stage_in_blobs(rf, &b, wd, limit).await,
            },
            (None, Some(name)) => self.auto_storage(name),
            (None, None) => return Err(Error::invalid("resource file has no source")),
        };
        let base = container.prefix();
        self.check_reach("storageContainerUrl", &container.bucket, &container.key)?;
        let list_prefix = format!("{base}{}", rf.blob_prefix.as_deref().unwrap_or(""));
        let objects = self.s3.list(&container.bucket, &list_prefix).await?;
        for (key, _) in objects {
            let Some(dest) = listed_dest(rf, wd, &base, &key, "object")? else { continue };
            bytes += self.s3.download_within(&container.bucket, &key, &dest, limit.saturating_sub(bytes)).await?;
            set_mode(&dest, rf.mode()).await?;
        }
        Ok(bytes)
    }
}

impl Staging {
    /// Downloads every blob of `container` under its path (and `blobPrefix`) into `wd`, each at
    /// its name below the container's path, under `filePath`.
    async fn stage_in_blobs(&self, rf: &ResourceFile, container: &BlobUrl, wd: &Path, limit: u64) -> Result<u64> {
        self.check_blob_reach("storageContainerUrl", container)?;
        let container = &self.opened(container, "storageContainerUrl")?;
        let base = container.prefix();
        let list_prefix = format!("{base}{}", rf.blob_prefix.as_deref().unwrap_or(""));
        let mut bytes = 0;
        for name in blob::list(&self.http, container, &list_prefix).await? {
            let Some(dest) = listed_dest(rf, wd, &base, &name, "blob")? else { continue };
            bytes += http::download(&self.http, &container.blob(&name, ""), &dest, limit.saturating_sub(bytes)).await?;
            set_mode(&dest, rf.mode()).await?;
        }
        Ok(bytes)
    }
}

/// Where `name`, listed under the container prefix `base`, lands in `wd` (below `filePath`);
/// `None` for a directory marker. A name whose rest would lead out of `wd` is refused.
fn listed_dest(rf: &ResourceFile, wd: &Path, base: &str, name: &str, what: &str) -> Result<Option<PathBuf>> {
    let relative = name.get(base.len()..).unwrap_or("");
    if relative.is_empty() || relative.ends_with('/') {
        return Ok(None);
    }
    check_relative(relative).map_err(|e| Error::Storage(format!("{what} {name:?}: {e}")))?;
    Ok(Some(wd.join(rf.file_path.as_deref().unwrap_or("")).join(relative)))
}

/// The error for a download past the bytes a task may still download.
fn over_limit(what: &str, limit: u64) -> Error {
    Error::Storage(format!(
        "{what}: more than the {limit} bytes the task may still download (drover-worker --max-task-download-bytes)"
    ))
}

async fn set_mode(path: &Path, mode: Option<u32>) -> Result<()> {
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    }
    Ok(())
}

/// Creates `dest`'s directory and a temporary sibling to write into; rename it with [`finish`].
pub(crate) async fn part_file(dest: &Path) -> Result<(tokio::fs::File, PathBuf)> {
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let mut part = dest.as_os_str().to_owned();
    part.push(".drover-part");
    let part = PathBuf::from(part);
    let file = tokio::fs::File::create(&part).await.map_err(|e| Error::io(format!("create {}", part.display()), e))?;
    Ok((file, part))
}

pub(crate) async fn finish(part: &Path, dest: &Path) -> Result<()> {
    tokio::fs::rename(part, dest).await.map_err(|e| Error::io(format!("rename to {}", dest.display()), e))
}
