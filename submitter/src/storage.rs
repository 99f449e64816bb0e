//! `drover storage ...`: upload and download files and directory trees.

use crate::output::{self, Format};
use drover_core::model::S3Url;
use drover_core::staging::Staging;
use drover_core::Config;
use futures_util::{stream, StreamExt, TryStreamExt};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Transfers in flight at once.
const PARALLEL: usize = 8;

#[derive(clap::Subcommand)]
pub(crate) enum StorageCommand {
    /// Upload a file or a directory tree to s3://BUCKET/PREFIX/ (creates the bucket if needed).
    Upload { local_path: PathBuf, destination: String },
    /// Download every object under s3://BUCKET/PREFIX into a local directory.
    Download { source: String, local_dir: PathBuf },
}

#[derive(serde::Serialize)]
struct Transferred {
    files: usize,
    bytes: u64,
}

fn bar(len: usize) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("[{bar:40}] {pos}/{len} files {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    })
}

pub(crate) async fn run(config: &Config, format: Format, cmd: StorageCommand) -> anyhow::Result<()> {
    let staging = Staging::new(config).await?;
    match cmd {
        StorageCommand::Upload { local_path, destination } => {
            let dest = S3Url::parse(&destination).map_err(|e| anyhow::anyhow!("destination: {e}"))?;
            let meta = std::fs::metadata(&local_path).map_err(|e| anyhow::anyhow!("{}: {e}", local_path.display()))?;
            let files: Vec<(PathBuf, String)> = if meta.is_dir() {
                let prefix = dest.prefix();
                walk(&local_path)?
                    .into_iter()
                    .map(|rel| (local_path.join(&rel), format!("{prefix}{}", rel.to_string_lossy())))
                    .collect()
            } else {
                let name = local_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let key = if dest.key.is_empty() || dest.key.ends_with('/') {
                    format!("{}{name}", dest.prefix())
                } else {
                    dest.key.clone()
                };
                vec![(local_path.clone(), key)]
            };
            staging.s3.ensure_bucket(&dest.bucket).await?;
            let bar = bar(files.len());
            let bytes: Vec<u64> = stream::iter(files.iter())
                .map(|(path, key)| {
                    let (staging, bucket, bar) = (&staging, &dest.bucket, &bar);
                    async move {
                        let n = staging.s3.upload(path, bucket, key).await?;
                        if let Some(bar) = bar {
                            bar.inc(1);
                        }
                        Ok::<_, drover_core::Error>(n)
                    }
                })
                .buffer_unordered(PARALLEL)
                .try_collect()
                .await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output::one(format, &Transferred { files: files.len(), bytes: bytes.iter().sum() })
        }
        StorageCommand::Download { source, local_dir } => {
            let src = S3Url::parse(&source).map_err(|e| anyhow::anyhow!("source: {e}"))?;
            let prefix = src.prefix();
            let mut objects: Vec<(String, PathBuf)> = staging
                .s3
                .list(&src.bucket, &prefix)
                .await?
                .into_iter()
                .filter(|(k, _)| !k.ends_with('/'))
                .map(|(k, _)| {
                    let rel = k[prefix.len()..].to_string();
                    (k, local_dir.join(rel))
                })
                .collect();
            if objects.is_empty() && !src.key.is_empty() {
                // Not a prefix: maybe a single object.
                let name = src.key.rsplit('/').next().unwrap_or(&src.key).to_string();
                objects.push((src.key.clone(), local_dir.join(name)));
            }
            for (key, path) in &objects {
                let rel = path.strip_prefix(&local_dir).unwrap_or(path);
                if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    anyhow::bail!("object {key:?} would land outside {}", local_dir.display());
                }
            }
            let bar = bar(objects.len());
            let bytes: Vec<u64> = stream::iter(objects.iter())
                .map(|(key, path)| {
                    let (staging, bucket, bar) = (&staging, &src.bucket, &bar);
                    async move {
                        let n = staging.s3.download(bucket, key, path).await?;
                        if let Some(bar) = bar {
                            bar.inc(1);
                        }
                        Ok::<_, drover_core::Error>(n)
                    }
                })
                .buffer_unordered(PARALLEL)
                .try_collect()
                .await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output::one(format, &Transferred { files: objects.len(), bytes: bytes.iter().sum() })
        }
    }
}

/// Every regular file under `root`, relative to it, sorted.
fn walk(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir))? {
            let entry = entry?;
            let rel = dir.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(rel);
            } else if kind.is_file() {
                files.push(rel);
            }
        }
    }
    files.sort();
    Ok(files)
}
