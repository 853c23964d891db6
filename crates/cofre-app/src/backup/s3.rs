//! An S3-compatible bucket, through the `object_store` crate. An object becomes visible only when
//! its upload completes (a single PUT, or the completion of a multipart upload), so a killed run
//! never leaves a partial object under a final name. What the bucket already holds is read with
//! one listing; only missing objects, or objects whose size differs, are sent.

use super::{probe_name, Progress, Source, SyncStats, TargetError};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

pub struct S3Target {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

/// `s3://bucket/prefix` split into bucket and prefix (without slashes at either end).
pub fn parse_location(text: &str) -> Result<(String, String), String> {
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| "must look like s3://bucket/prefix".to_owned())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c));
    if !bucket_ok {
        return Err(format!(
            "the bucket `{bucket}` is not a valid bucket name (3 to 63 lowercase letters, digits, `.` or `-`)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.chars().any(|c| c.is_control()) {
        return Err(format!("the prefix `{prefix}` is not a plain path"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

pub struct S3Settings<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub access_key_id: &'a str,
    pub secret_access_key: Zeroizing<String>,
}

fn s3_err(what: &str, e: object_store::Error) -> TargetError {
    TargetError::new(format!("{what}: {e}"))
}

impl S3Target {
    pub fn new(s: S3Settings<'_>) -> Result<S3Target, TargetError> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(s.bucket)
            .with_region(s.region.unwrap_or("us-east-1"))
            .with_access_key_id(s.access_key_id)
            .with_secret_access_key(s.secret_access_key.as_str())
            // S3-compatible servers rarely serve virtual-hosted buckets.
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(endpoint) = s.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = b.build().map_err(|e| s3_err("S3 settings", e))?;
        Ok(S3Target {
            store: Arc::new(store),
            bucket: s.bucket.to_owned(),
            prefix: s.prefix.to_owned(),
        })
    }

    fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn whom(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    pub async fn probe(&self) -> Result<(), TargetError> {
        let key = self.key(&probe_name());
        let content = format!("cofre write test {}\n", uuid::Uuid::new_v4());
        let what = format!("write test on {}", self.whom());
        self.store
            .put(&key, PutPayload::from(content.clone().into_bytes()))
            .await
            .map_err(|e| s3_err(&what, e))?;
        let back = async { self.store.get(&key).await?.bytes().await }.await;
        let deleted = self.store.delete(&key).await;
        let back = back.map_err(|e| s3_err(&what, e))?;
        if back.as_ref() != content.as_bytes() {
            return Err(TargetError::new(format!(
                "{what}: the probe object read back different bytes"
            )));
        }
        deleted.map_err(|e| s3_err(&what, e))?;
        Ok(())
    }

    pub async fn sync(
        &self,
        source: &Source,
        progress: &Progress,
    ) -> Result<SyncStats, TargetError> {
        let base = self.key(&source.kind);
        let mut present: HashMap<String, u64> = HashMap::new();
        let mut listing = self.store.list(Some(&base));
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|e| s3_err(&format!("listing {}", self.whom()), e))?;
            present.insert(meta.location.to_string(), meta.size);
        }
        let mut stats = SyncStats::default();
        for f in &source.files {
            let key = self.key(&format!("{}/{}", source.kind, f.rel));
            if present.get(key.as_ref()) == Some(&f.size) {
                progress.update(|p| {
                    p.files_done += 1;
                    p.bytes_done += f.size;
                });
                continue;
            }
            self.upload(&f.path, f.size, key, progress).await?;
            stats.files_sent += 1;
            stats.bytes_sent += f.size;
            progress.update(|p| p.files_done += 1);
        }
        Ok(stats)
    }

    /// Streams the first `size` bytes of a file; large files go up as a multipart upload, which
    /// is aborted (and so never visible) if anything fails.
    async fn upload(
        &self,
        path: &std::path::Path,
        size: u64,
        key: ObjectPath,
        progress: &Progress,
    ) -> Result<(), TargetError> {
        let what = format!("uploading {key} to {}", self.whom());
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| TargetError::new(format!("cannot read {}: {e}", path.display())))?;
        let mut input = file.take(size);
        let store: Arc<dyn ObjectStore> = self.store.clone();
        let mut writer = object_store::buffered::BufWriter::new(store, key);
        let mut buf = vec![0u8; 1 << 20];
        let result: Result<(), std::io::Error> = async {
            loop {
                let n = input.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                writer.write_all(&buf[..n]).await?;
                progress.update(|p| p.bytes_done += n as u64);
            }
            writer.shutdown().await
        }
        .await;
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(TargetError::new(format!("{what}: {e}")));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("s3://cofre-backups/prod").unwrap(),
            ("cofre-backups".into(), "prod".into())
        );
        assert_eq!(
            parse_location("s3://cofre-backups").unwrap(),
            ("cofre-backups".into(), "".into())
        );
        for bad in [
            "cofre-backups/prod",
            "s3://A_B/x",
            "s3://ab/x",
            "s3://abc/../x",
        ] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }
}
