//! `drover application ...`: versioned application packages in the account's storage.

use crate::output::{self, Format};
use drover_core::model::{now_ms, rfc3339, validate_id};
use drover_core::staging::Staging;
use drover_core::status::{file_sha256, PackageVersion, StatusStore};
use drover_core::Config;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum ApplicationCommand {
    /// Application packages.
    #[command(subcommand)]
    Package(PackageCommand),
    /// List applications and their versions.
    List,
}

#[derive(clap::Subcommand)]
pub(crate) enum PackageCommand {
    /// Store a version of an application (a .zip or .tar.gz); it becomes the default version.
    Upload {
        /// The application's id (letters, digits, '-' and '_').
        #[arg(long, value_name = "APP")]
        application_id: String,
        /// The version to store (letters, digits, '.', '-' and '_'); tasks name it in
        /// applicationPackageReferences.
        #[arg(long)]
        version: String,
        /// The package: a .zip, .tar.gz or .tgz file, unpacked on each node that needs it.
        #[arg(long, value_name = "FILE")]
        package_file: PathBuf,
    },
}

pub(crate) async fn run(config: &Config, format: Format, cmd: ApplicationCommand) -> anyhow::Result<()> {
    let store = StatusStore::connect(config).await?;
    match cmd {
        ApplicationCommand::List => output::list(format, &store.applications().await?, &["id", "defaultVersion"]),
        ApplicationCommand::Package(PackageCommand::Upload { application_id, version, package_file }) => {
            validate_id("--application-id", &application_id)?;
            validate_id("--version", &version.replace('.', "_"))
                .map_err(|_| anyhow::anyhow!("--version {version:?}: letters, digits, '.', '-' and '_' only"))?;
            let name = package_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !(name.ends_with(".zip") || name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
                anyhow::bail!("--package-file {}: must be a .zip or .tar.gz file", package_file.display());
            }
            let size = std::fs::metadata(&package_file)
                .map_err(|e| anyhow::anyhow!("--package-file {}: {e}", package_file.display()))?
                .len();
            let staging = Staging::new(config).await?;
            staging.s3.ensure_bucket(&config.bucket).await?;
            let at = staging.application_package(&application_id, &version, &name);
            staging.upload_path(&package_file, &at.bucket, &at.key).await?;
            let sha256 = file_sha256(&package_file)
                .map_err(|e| anyhow::anyhow!("--package-file {}: {e}", package_file.display()))?;
            let package = PackageVersion {
                version,
                file: name,
                size,
                last_activation_time: rfc3339(now_ms()),
                sha256: Some(sha256),
            };
            store.add_package(&application_id, &package).await?;
            output::one(format, &package)
        }
    }
}
