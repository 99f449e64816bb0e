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
    #[command(after_long_help = UPLOAD_EXAMPLES)]
    Upload {
        /// A file, or a directory whose every file is uploaded (keeping the tree below it).
        local_path: PathBuf,
        /// Where: s3://BUCKET/PREFIX/ (a file keeps its name under it; s3://BUCKET/KEY without
        /// a trailing / names the object of a single file).
        destination: String,
    },
    /// Download an object, a folder or every object whose key starts with a prefix.
    ///
    /// SOURCE is matched as `aws s3` does: a folder (objects under PREFIX/) lands in LOCAL_DIR
    /// with the tree below it; else the object named PREFIX; else every object whose key starts
    /// with PREFIX (s3://b/p/total finds p/total.txt and p/totals/x), placed by its path after
    /// the last / of PREFIX.
    #[command(after_long_help = DOWNLOAD_EXAMPLES)]
    Download {
        /// s3://BUCKET/PREFIX: a folder, an object, or the start of some keys.
        source: String,
        /// The local directory to download into (created if needed).
        local_dir: PathBuf,
    },
}

const UPLOAD_EXAMPLES: &str = "Examples:
  drover storage upload ./data s3://drover/inputs/        # every file under ./data
  drover storage upload app.sh s3://drover/app/           # s3://drover/app/app.sh";

const DOWNLOAD_EXAMPLES: &str = "Examples:
  drover storage download s3://drover/outputs/frames ./results     # the folder's objects
  drover storage download s3://drover/outputs/frames/f1.png .      # one object
  drover storage download s3://drover/outputs/frames/f1 ./results  # f1.png, f10.png, ...";

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
                        let n = staging.upload_path(path, bucket, key).await?;
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
            let listed: Vec<String> =
                staging.s3.list(&src.bucket, &src.key).await?.into_iter().map(|(k, _)| k).collect();
            let (base, keys) = select(&src.key, listed);
            if keys.is_empty() {
                anyhow::bail!("source {source}: no object has this key, lies under it or starts with it");
            }
            let objects: Vec<(String, PathBuf)> = keys
                .into_iter()
                .map(|k| {
                    let path = local_dir.join(k.strip_prefix(base.as_str()).unwrap_or(&k));
                    (k, path)
                })
                .collect();
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

/// Which of the `listed` keys (those starting with `key`) a download of `key` takes, and the
/// part of their keys that is dropped to place them: a folder (`key/...`) first, else the
/// object `key` itself, else every listed key. Keys ending in `/` (folder markers) are skipped.
fn select(key: &str, listed: Vec<String>) -> (String, Vec<String>) {
    let listed: Vec<String> = listed.into_iter().filter(|k| !k.ends_with('/') && k.starts_with(key)).collect();
    let parent = |k: &str| k.rfind('/').map_or(String::new(), |i| k[..=i].to_string());
    if key.is_empty() || key.ends_with('/') {
        return (key.to_string(), listed);
    }
    let folder = format!("{key}/");
    let under: Vec<String> = listed.iter().filter(|k| k.starts_with(&folder)).cloned().collect();
    if !under.is_empty() {
        return (folder, under);
    }
    if listed.iter().any(|k| k == key) {
        return (parent(key), vec![key.to_string()]);
    }
    (parent(key), listed)
}

#[cfg(test)]
mod tests {
    use super::select;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_folder_comes_first_then_the_object_then_the_prefix() {
        let listed = keys(&["p/out/a.txt", "p/out/b/c.txt", "p/output.txt"]);
        assert_eq!(select("p/out", listed.clone()), ("p/out/".into(), keys(&["p/out/a.txt", "p/out/b/c.txt"])));
        assert_eq!(select("p/out/", listed), ("p/out/".into(), keys(&["p/out/a.txt", "p/out/b/c.txt"])));
        let listed = keys(&["p/total", "p/total.txt"]);
        assert_eq!(select("p/total", listed), ("p/".into(), keys(&["p/total"])));
        let listed = keys(&["p/total.txt", "p/totals/x"]);
        assert_eq!(select("p/total", listed), ("p/".into(), keys(&["p/total.txt", "p/totals/x"])));
        assert_eq!(select("tot", keys(&["total.txt"])), ("".into(), keys(&["total.txt"])));
        assert_eq!(select("p/none", vec![]), ("p/".into(), vec![]));
        assert_eq!(select("", keys(&["a", "d/"])), ("".into(), keys(&["a"])));
    }
}
