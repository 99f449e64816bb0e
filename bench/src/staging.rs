//! Staging throughput: files uploaded and downloaded one after another through drover's
//! `Staging` (what a node does with output and resource files), and the same files through a
//! bare `aws_sdk_s3::Client` on the same endpoint.

use crate::farm::Farm;
use anyhow::{bail, Context, Result};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use drover_core::model::task::ResourceFile;
use drover_core::staging::Staging;
use drover_core::Config;
use futures_util::{StreamExt, TryStreamExt};
use std::path::Path;
use std::time::Instant;

/// One set of files: how many, how large, and the label it is reported under.
const SETS: [(&str, usize, usize); 2] = [("1KiB", 200, 1024), ("1MiB", 20, 1024 * 1024)];

/// Seconds to move one set both ways with one client.
pub(crate) struct Transfer {
    pub(crate) upload_seconds: f64,
    pub(crate) download_seconds: f64,
}

/// One set, through drover and through the SDK alone.
pub(crate) struct Set {
    pub(crate) label: &'static str,
    pub(crate) files: usize,
    pub(crate) bytes: u64,
    pub(crate) drover: Transfer,
    pub(crate) raw: Transfer,
}

/// What the staging phase measured.
pub(crate) struct StagingResult {
    pub(crate) sets: Vec<Set>,
}

/// An SDK client on drover's endpoint, with drover's checksum settings (checksums only where
/// S3 requires them), so the comparison is of drover's layer, not of checksums.
pub(crate) async fn raw_client(config: &Config) -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if sdk.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Deletes every object under `prefix` of the account's bucket; returns how many went.
pub(crate) async fn delete_prefix(config: &Config, prefix: &str) -> Result<usize> {
    let client = raw_client(config).await;
    let bucket = config.bucket.as_str();
    let mut keys = Vec::new();
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from))),
            // Nothing was ever stored there.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_bucket()) => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("list s3://{bucket}/{prefix}")),
        }
    }
    let n = keys.len();
    futures_util::stream::iter(keys)
        .map(|key| {
            let client = &client;
            async move {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .with_context(|| format!("delete s3://{bucket}/{key}"))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n)
}

/// Writes `count` files of `size` bytes (not compressible) into `dir`; returns their names.
fn make_files(dir: &Path, label: &str, count: usize, size: usize) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(size);
        let name = format!("{label}-{i:04}.bin");
        let path = dir.join(&name);
        std::fs::write(&path, &data).with_context(|| format!("write {}", path.display()))?;
        names.push(name);
    }
    Ok(names)
}

/// Checks that `dir` holds every file with `size` bytes.
fn check_files(dir: &Path, names: &[String], size: usize) -> Result<()> {
    for name in names {
        let path = dir.join(name);
        let len = std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?.len();
        if len != size as u64 {
            bail!("{} has {len} bytes, not {size}", path.display());
        }
    }
    Ok(())
}

/// Uploads then downloads each set through both clients, under `<account>/bench-staging/`.
pub(crate) async fn run(farm: &Farm) -> Result<StagingResult> {
    let config = &farm.config;
    let bucket = config.bucket.as_str();
    let staging = Staging::new(config).await.context("drover's staging")?;
    staging.s3.ensure_bucket(bucket).await.with_context(|| format!("create bucket {bucket}"))?;
    let raw = raw_client(config).await;
    let root = farm.work.join("staging");
    let prefix = format!("{}/bench-staging", farm.account);

    // One round trip each before timing: connections are open when the clock starts.
    let warm = make_files(&root.join("warm"), "warm", 1, 1024)?;
    let warm_key = format!("{prefix}/warm/{}", warm[0]);
    staging.upload(&root.join("warm"), Path::new(&warm[0]), bucket, &warm_key).await.context("warm-up upload")?;
    staging.s3.download(bucket, &warm_key, &root.join("warm-back")).await.context("warm-up download")?;
    raw.get_object().bucket(bucket).key(&warm_key).send().await.context("warm-up get_object")?;

    let mut sets = Vec::new();
    for (label, count, size) in SETS {
        let src = root.join(label);
        let names = make_files(&src, label, count, size)?;
        let key = |via: &str, name: &str| format!("{prefix}/{via}/{name}");

        // File by file, each through drover then through the SDK alone, so that what slows the
        // machine meanwhile (the server's file system right after an earlier phase's cleanup)
        // slows both alike.
        let (mut drover_up, mut raw_up) = (0.0, 0.0);
        for name in &names {
            let t = Instant::now();
            staging
                .upload(&src, Path::new(name), bucket, &key("drover", name))
                .await
                .with_context(|| format!("upload {name} through drover"))?;
            drover_up += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let body = ByteStream::from_path(src.join(name)).await.with_context(|| format!("read {name}"))?;
            raw.put_object()
                .bucket(bucket)
                .key(key("raw", name))
                .body(body)
                .send()
                .await
                .with_context(|| format!("put_object {name}"))?;
            raw_up += t.elapsed().as_secs_f64();
        }

        let dest = root.join(format!("{label}-drover"));
        let raw_dest = root.join(format!("{label}-raw"));
        for dir in [&dest, &raw_dest] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let (mut drover_down, mut raw_down) = (0.0, 0.0);
        // Which client goes first alternates from file to file. The local s3s-fs writes a
        // response's headers and body apart, without TCP_NODELAY: the body waits for the
        // client's ACK of the headers, which a connection that sent its request right after its
        // last response (Linux's delayed-ACK "pingpong" mode) holds for up to 40 ms. Always
        // first, one client would take every such stall and the other none.
        for (i, name) in names.iter().enumerate() {
            // A resource file as a task gives it: what a node downloads before the task runs.
            let resource: ResourceFile = serde_json::from_value(serde_json::json!({
                "httpUrl": format!("s3://{bucket}/{}", key("drover", name)),
                "filePath": name,
            }))
            .context("a resource file")?;
            for drover_turn in [i % 2 == 0, i % 2 == 1] {
                let t = Instant::now();
                if drover_turn {
                    staging
                        .stage_in(&resource, &dest, u64::MAX)
                        .await
                        .with_context(|| format!("download {name} through drover"))?;
                    drover_down += t.elapsed().as_secs_f64();
                } else {
                    raw_download(&raw, bucket, &key("raw", name), &raw_dest.join(name))
                        .await
                        .with_context(|| format!("get_object {name}"))?;
                    raw_down += t.elapsed().as_secs_f64();
                }
            }
        }
        check_files(&dest, &names, size)?;
        check_files(&raw_dest, &names, size)?;

        sets.push(Set {
            label,
            files: count,
            bytes: (count * size) as u64,
            drover: Transfer { upload_seconds: drover_up, download_seconds: drover_down },
            raw: Transfer { upload_seconds: raw_up, download_seconds: raw_down },
        });
    }
    let deleted = delete_prefix(config, &format!("{prefix}/")).await?;
    eprintln!("[staging] deleted {deleted} objects");
    std::fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    Ok(StagingResult { sets })
}

/// Streams an object into a file, as drover does (no temporary name: the SDK alone).
async fn raw_download(client: &aws_sdk_s3::Client, bucket: &str, key: &str, dest: &Path) -> Result<u64> {
    let out = client.get_object().bucket(bucket).key(key).send().await?;
    let mut file = tokio::fs::File::create(dest).await.with_context(|| format!("create {}", dest.display()))?;
    let mut body = out.body.into_async_read();
    let bytes = tokio::io::copy(&mut body, &mut file).await.context("transfer")?;
    use tokio::io::AsyncWriteExt;
    file.flush().await.with_context(|| format!("write {}", dest.display()))?;
    Ok(bytes)
}
