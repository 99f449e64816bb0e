//! The S3 store: streaming object transfers with retries and timeouts.

use crate::config::Redacted;
use crate::{Config, Error, Result};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use std::path::Path;
use std::time::Duration;

/// An S3 (or S3-compatible) endpoint.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

fn storage_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E>,
) -> Error {
    let code = e.as_service_error().and_then(|s| s.code().map(str::to_owned));
    match code.as_deref() {
        Some("NoSuchKey") | Some("NotFound") => Error::NotFound { kind: "object", id: what.to_string() },
        Some("NoSuchBucket") => Error::Storage(format!("{what}: no such bucket")),
        _ => {
            use aws_sdk_s3::error::SdkError;
            let server = e.raw_response().is_some_and(|r| r.status().is_server_error());
            let unreachable =
                matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_));
            let message = format!("{what}: {}", DisplayErrorContext(&e));
            if server || unreachable {
                Error::StorageUnavailable(message)
            } else {
                Error::Storage(message)
            }
        }
    }
}

impl S3Store {
    /// A client for the configured endpoint; credentials and region come the standard AWS way
    /// (region defaults to us-east-1); https trusts the authorities of `--ca-file` too.
    pub async fn connect(config: &Config) -> Result<Self> {
        use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(6).with_max_backoff(Duration::from_secs(5)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            )
            .load()
            .await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
        if sdk.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if let Some(path) = &config.ca_file {
            use aws_smithy_http_client::tls;
            let trust = tls::TrustStore::default().with_pem_certificate(crate::tls::ca_pem(path)?);
            let context = tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .map_err(|e| Error::invalid(format!("ca-file {}: {e}", path.display())))?;
            let client = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(context)
                .build_https();
            builder = builder.http_client(client);
        }
        if let Some(endpoint) = &config.s3_endpoint {
            tracing::debug!(endpoint = %Redacted(endpoint), "using S3 endpoint");
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3Store { client: aws_sdk_s3::Client::from_conf(builder.build()) })
    }

    /// Creates `bucket` unless it exists.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<()> {
        if self.client.head_bucket().bucket(bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error().and_then(|s| s.code()) {
                Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists") => Ok(()),
                _ => Err(storage_error(&format!("create bucket {bucket}"), e)),
            },
        }
    }

    /// Streams an object into `dest` (written under a temporary name, then renamed).
    pub async fn download(&self, bucket: &str, key: &str, dest: &Path) -> Result<u64> {
        self.download_within(bucket, key, dest, u64::MAX).await
    }

    /// [`S3Store::download`], refused (nothing left in place) past `limit` bytes.
    pub async fn download_within(&self, bucket: &str, key: &str, dest: &Path, limit: u64) -> Result<u64> {
        let what = format!("s3://{bucket}/{key}");
        let out = self.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| storage_error(&what, e))?;
        let declared = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if declared > limit {
            return Err(super::over_limit(&what, limit));
        }
        let (mut file, part) = super::part_file(dest).await?;
        use tokio::io::AsyncReadExt;
        let mut body = out.body.into_async_read().take(limit.saturating_add(1));
        let bytes = tokio::io::copy(&mut body, &mut file)
            .await
            .map_err(|e| Error::Storage(format!("{what}: transfer failed: {e}")))?;
        if bytes > limit {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(super::over_limit(&what, limit));
        }
        use tokio::io::AsyncWriteExt;
        file.flush().await.map_err(|e| Error::io(format!("write {}", part.display()), e))?;
        super::finish(&part, dest).await?;
        Ok(bytes)
    }

    /// An object, or the part `range` (`bytes=START-[END]`) of it, streamed.
    pub async fn open(&self, bucket: &str, key: &str, range: Option<&str>) -> Result<crate::node_files::FileRead> {
        let what = format!("s3://{bucket}/{key}");
        let mut get = self.client.get_object().bucket(bucket).key(key);
        let mut part = None;
        if let Some(range) = range {
            let head =
                self.client.head_object().bucket(bucket).key(key).send().await.map_err(|e| storage_error(&what, e))?;
            let size = head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            let (start, length) = crate::node_files::byte_range(range, size)?;
            get = get.range(format!("bytes={start}-{}", start + length - 1));
            part = Some((start, length, size));
        }
        let out = get.send().await.map_err(|e| storage_error(&what, e))?;
        let sent = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let (start, length, size) = part.unwrap_or((0, sent, sent));
        let modified_ms = out.last_modified().map_or(0, |t| t.to_millis().unwrap_or(0));
        let entry = crate::staging::beneath::Entry::stored(key.rsplit('/').next().unwrap_or(key), size, modified_ms);
        Ok(crate::node_files::FileRead { entry, start, length, body: Box::new(out.body.into_async_read()) })
    }

    /// Removes an object; false if there was none.
    pub async fn remove(&self, bucket: &str, key: &str) -> Result<bool> {
        let what = format!("s3://{bucket}/{key}");
        match self.client.head_object().bucket(bucket).key(key).send().await.map_err(|e| storage_error(&what, e)) {
            Err(Error::NotFound { .. }) => return Ok(false),
            other => other?,
        };
        self.client.delete_object().bucket(bucket).key(key).send().await.map_err(|e| storage_error(&what, e))?;
        Ok(true)
    }

    /// Uploads an open file as one object (streamed from disk; S3 stores it whole or not at all).
    pub async fn upload(&self, file: std::fs::File, bucket: &str, key: &str) -> Result<u64> {
        let what = format!("s3://{bucket}/{key}");
        let body = ByteStream::read_from()
            .file(tokio::fs::File::from_std(file))
            .build()
            .await
            .map_err(|e| Error::Storage(format!("{what}: read the file: {e}")))?;
        let len = body.size_hint().0;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| storage_error(&what, e))?;
        Ok(len)
    }

    /// Every object under `prefix`, with its size, in key order.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| storage_error(&format!("list s3://{bucket}/{prefix}"), e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_string(), o.size().unwrap_or(0)));
                }
            }
        }
        Ok(out)
    }
}
