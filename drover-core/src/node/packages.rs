//! Application packages on a node: each version is downloaded and unpacked once, under
//! `<work-dir>/<account>/applications/<app>/<version>/`, and shared by every task that names it.
//! Tasks find it through `DROVER_APP_PACKAGE_<app>_<version>` and Azure's
//! `AZ_BATCH_APP_PACKAGE_<app>_<version>` (no version suffix for the default version).

use super::NodeContext;
use crate::model::task::{ApplicationPackageReference, FailureCode, FailureInfo};
use crate::status::{file_sha256, PackageVersion};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Each (application, version) seen here, and where it is unpacked once it is.
type Unpacked = HashMap<(String, String), Arc<OnceCell<PathBuf>>>;

/// Versions unpacked on this node, each once.
#[derive(Default)]
pub(crate) struct NodePackages {
    unpacked: tokio::sync::Mutex<Unpacked>,
}

/// Makes every referenced package available; returns the environment variables naming them.
pub(super) async fn install(
    ctx: &NodeContext,
    refs: &[ApplicationPackageReference],
) -> std::result::Result<Vec<(String, String)>, FailureInfo> {
    let mut env = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let at = |e: Error| {
            FailureInfo::user(
                FailureCode::ApplicationPackageError,
                format!("applicationPackageReferences[{i}] ({}): {e}", r.application_id),
            )
        };
        let package = ctx.store.package(&r.application_id, r.version.as_deref()).await.map_err(at)?;
        let cell = {
            let mut unpacked = ctx.packages.unpacked.lock().await;
            unpacked.entry((r.application_id.clone(), package.version.clone())).or_default().clone()
        };
        let dir = cell.get_or_try_init(|| unpack(ctx, &r.application_id, &package)).await.map_err(at)?;
        let path = dir.to_string_lossy().into_owned();
        for name in variable_names(&r.application_id, r.version.as_deref()) {
            env.push((format!("DROVER_APP_PACKAGE_{name}"), path.clone()));
            env.push((format!("AZ_BATCH_APP_PACKAGE_{name}"), path.clone()));
        }
    }
    Ok(env)
}

/// The suffixes of a package's variables, Azure's Linux way: `.`, `-` and `#` become `_`; both
/// the id as written and in lower case (Azure documents both).
fn variable_names(application: &str, version: Option<&str>) -> Vec<String> {
    let flat = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
    let name = match version {
        Some(v) => format!("{}_{}", flat(application), flat(v)),
        None => flat(application),
    };
    let lower = name.to_lowercase();
    if lower == name {
        vec![name]
    } else {
        vec![name, lower]
    }
}

/// Downloads and unpacks a version (unless an earlier run of this node did), atomically: into a
/// temporary directory renamed into place, so a half-unpacked package is never used.
/// The file must be the one uploaded (its SHA-256, when recorded, matches).
async fn unpack(ctx: &NodeContext, application: &str, package: &PackageVersion) -> Result<PathBuf> {
    let (version, file) = (package.version.as_str(), package.file.as_str());
    let root = ctx.options.work_dir.join(&ctx.config.account).join("applications").join(application);
    let dir = root.join(version);
    if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
        return Ok(dir);
    }
    tokio::fs::create_dir_all(&root).await.map_err(|e| Error::io(format!("{}", root.display()), e))?;
    let archive = root.join(format!(".{version}.download"));
    let at = ctx.staging.application_package(application, version, file);
    let (staging, from, into) = (ctx.staging.clone(), at.clone(), archive.clone());
    ctx.transfer(async move { staging.retrying(|| staging.s3.download(&from.bucket, &from.key, &into)).await }).await?;
    if let Some(want) = &package.sha256 {
        let path = archive.clone();
        let got = tokio::task::spawn_blocking(move || file_sha256(&path))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::io(archive.display().to_string(), e))?;
        if got != *want {
            let _ = tokio::fs::remove_file(&archive).await;
            return Err(Error::Storage(format!(
                "{at}: the stored package changed since it was uploaded (SHA-256 {got}, recorded {want}); upload it again"
            )));
        }
    }
    let (archive2, dir2, file) = (archive.clone(), dir.clone(), file.to_string());
    tokio::task::spawn_blocking(move || extract(&archive2, &dir2, &file))
        .await
        .map_err(|e| Error::Internal(format!("unpacking {application} {version}: {e}")))??;
    let _ = tokio::fs::remove_file(&archive).await;
    tracing::info!(application, version, dir = %dir.display(), "application package unpacked");
    Ok(dir)
}

fn extract(archive: &Path, dir: &Path, file: &str) -> Result<()> {
    let tmp = dir.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let input = std::fs::File::open(archive).map_err(|e| Error::io(archive.display().to_string(), e))?;
    let bad = |e: String| Error::invalid(format!("package file {file}: {e}"));
    if file.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(input).map_err(|e| bad(e.to_string()))?;
        zip.extract(&tmp).map_err(|e| bad(e.to_string()))?;
    } else if file.ends_with(".tar.gz") || file.ends_with(".tgz") {
        tar::Archive::new(flate2::read::GzDecoder::new(input)).unpack(&tmp).map_err(|e| bad(e.to_string()))?;
    } else {
        return Err(bad("not a .zip or .tar.gz file".into()));
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn variables_follow_azure_names() {
        assert_eq!(super::variable_names("FOO", Some("1")), ["FOO_1", "foo_1"]);
        assert_eq!(super::variable_names("agent-linux-x64", Some("1.1.46.0")), ["agent_linux_x64_1_1_46_0"]);
        assert_eq!(super::variable_names("blender", None), ["blender"]);
    }
}
