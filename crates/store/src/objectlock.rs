//! S3 Object Lock: the requests object_store does not make (a bucket's
//! lock configuration, an object's retention, deleting one version),
//! signed with AWS Signature Version 4 under the credentials object_store
//! resolved, and [`LockingBackend`], which locks every pack and manifest it
//! writes and never sends a delete for one still locked.
//!
//! In a bucket with Object Lock (always versioned) a DELETE without a
//! version only hides an object behind a delete marker; its data stays and
//! is billed. So a locking repository deletes packs and manifests by
//! version, after reading their retention (one HEAD): a locked one is
//! refused here with [`Error::Locked`], before any DELETE is sent.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use sha2::{Digest, Sha256};

use crate::backend::{Backend, ObjectInfo, WriteMode};
use crate::{keys, Error, Listed, Result};

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may shorten or remove it.
    Governance,
    /// Nobody, the account root included, can shorten or remove it.
    Compliance,
}

impl LockMode {
    /// `governance` or `compliance` (as the config says).
    ///
    /// # Errors
    /// A message naming both.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "governance" => Ok(Self::Governance),
            "compliance" => Ok(Self::Compliance),
            _ => Err(format!(
                "object lock mode {s:?} is neither governance nor compliance"
            )),
        }
    }

    fn header(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

/// An object's current version and its retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The current version's id.
    pub version: Option<String>,
    /// `GOVERNANCE` or `COMPLIANCE`, when locked.
    pub mode: Option<String>,
    /// Locked until then.
    pub until: Option<DateTime<Utc>>,
}

impl Retention {
    /// True while locked at `now`.
    #[must_use]
    pub fn locked_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_some_and(|u| u > now)
    }
}

/// The time format of retention dates.
fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Characters S3 leaves unencoded in a canonical request.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Who signs, where and when.
struct Signer<'a> {
    /// `YYYYMMDDTHHMMSSZ`.
    amz_date: &'a str,
    region: &'a str,
    secret: &'a str,
}

/// The AWS Signature Version 4 of a request: `headers` sorted, lowercase,
/// and every one of them signed. Returns (signed header names, signature).
fn sign_v4(
    method: &str,
    path: &str,
    canonical_query: &str,
    headers: &[(String, String)],
    payload: &str,
    by: &Signer<'_>,
) -> (String, String) {
    let Signer {
        amz_date,
        region,
        secret,
    } = *by;
    let day = &amz_date[..8];
    let signed = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{path}\n{canonical_query}\n{}\n{signed}\n{payload}",
        headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect::<String>()
    );
    let scope = format!("{day}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{secret}").as_bytes(), day);
    let k = hmac(&k, region);
    let k = hmac(&k, "s3");
    let k = hmac(&k, "aws4_request");
    (signed, hex::encode(hmac(&k, &to_sign)))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("invariant: HMAC takes any key");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Object Lock requests for one S3 repository.
pub struct S3ObjectLock {
    http: reqwest::Client,
    credentials: object_store::aws::AwsCredentialProvider,
    /// Scheme and authority, e.g. `http://127.0.0.1:9000`.
    origin: String,
    /// The authority as signed in the `host` header (`127.0.0.1:9000`).
    host: String,
    /// The path of the bucket's root, `/bucket` (path style) or empty.
    bucket_path: String,
    /// The repository's key prefix in the bucket (`repo/` or empty).
    prefix: String,
    region: String,
    bucket: String,
    location: String,
}

impl std::fmt::Debug for S3ObjectLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ObjectLock")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl S3ObjectLock {
    /// The lock client of the store `builder` built as `s3`, for the
    /// repository under `prefix` in `bucket`.
    pub(crate) fn new(
        builder: &AmazonS3Builder,
        s3: &AmazonS3,
        bucket: &str,
        prefix: &str,
        location: &str,
    ) -> std::result::Result<Self, String> {
        let get = |k| builder.get_config_value(&k);
        let bucket = bucket.to_string();
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted =
            get(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let (origin, bucket_path) = match get(AmazonS3ConfigKey::Endpoint) {
            None => (
                format!("https://{bucket}.s3.{region}.amazonaws.com"),
                String::new(),
            ),
            Some(e) if virtual_hosted => (e.trim_end_matches('/').to_string(), String::new()),
            Some(e) => (e.trim_end_matches('/').to_string(), format!("/{bucket}")),
        };
        let host = url::Url::parse(&origin)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| {
                    u.port()
                        .map_or_else(|| h.to_string(), |p| format!("{h}:{p}"))
                })
            })
            .ok_or_else(|| format!("endpoint {origin} has no host"))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            credentials: Arc::clone(s3.credentials()),
            origin,
            host,
            bucket_path,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            region,
            bucket,
            location: location.to_string(),
        })
    }

    /// The bucket's name.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn failed(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::ObjectLock {
            location: self.location.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Sends a signed request for `key` (under the repository; `None`: the
    /// bucket) with `query` pairs (an empty value is a bare name such as
    /// `retention`).
    async fn send(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        body: Vec<u8>,
        extra: &[(&'static str, String)],
    ) -> Result<reqwest::Response> {
        let what = key.unwrap_or("the bucket");
        let cred: Arc<AwsCredential> = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| self.failed(what, format!("credentials: {e}")))?;
        let path = match key {
            Some(k) => format!(
                "{}/{}",
                self.bucket_path,
                uri_encode(&format!("{}{k}", self.prefix), true)
            ),
            None => format!("{}/", self.bucket_path),
        };
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let url_query = pairs
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let url = if url_query.is_empty() {
            format!("{}{path}", self.origin)
        } else {
            format!("{}{path}?{url_query}", self.origin)
        };
        let now = Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let day = now.format("%Y%m%d").to_string();
        let payload = hex::encode(Sha256::digest(&body));
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-amz-content-sha256".into(), payload.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        if let Some(t) = &cred.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        for (k, v) in extra {
            headers.push(((*k).to_string(), v.clone()));
        }
        headers.sort();
        let (signed, signature) = sign_v4(
            method.as_str(),
            &path,
            &canonical_query,
            &headers,
            &payload,
            &Signer {
                amz_date: &amz_date,
                region: &self.region,
                secret: &cred.secret_key,
            },
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let mut req = self.http.request(method, &url).header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                cred.key_id
            ),
        );
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k.as_str(), v.as_str());
        }
        req.body(body)
            .send()
            .await
            .map_err(|e| self.failed(what, e.to_string()))
    }

    /// An answer that is not a success, as an error naming `key`.
    async fn refused(&self, key: &str, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let code = text
            .split("<Code>")
            .nth(1)
            .and_then(|s| s.split("</Code>").next())
            .unwrap_or("");
        let message = text
            .split("<Message>")
            .nth(1)
            .and_then(|s| s.split("</Message>").next())
            .unwrap_or("");
        self.failed(key, format!("{status} {code} {message}").trim().to_string())
    }

    /// True when the bucket has Object Lock enabled.
    ///
    /// # Errors
    /// [`Error::ObjectLock`] when the answer is neither the configuration
    /// nor "none configured".
    pub async fn bucket_enabled(&self) -> Result<bool> {
        let resp = self
            .send(
                reqwest::Method::GET,
                None,
                &[("object-lock", "")],
                Vec::new(),
                &[],
            )
            .await?;
        if resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Ok(text.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>"));
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND
            && text.contains("ObjectLockConfigurationNotFound")
        {
            return Ok(false);
        }
        Err(self.failed(
            "the bucket",
            format!("reading its Object Lock configuration: {status} {text}"),
        ))
    }

    /// The current version of `key` and its retention (`None`: no such
    /// object).
    ///
    /// # Errors
    /// [`Error::ObjectLock`].
    pub async fn retention(&self, key: &str) -> Result<Option<Retention>> {
        let resp = self
            .send(reqwest::Method::HEAD, Some(key), &[], Vec::new(), &[])
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.refused(key, resp).await);
        }
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let until = match get("x-amz-object-lock-retain-until-date") {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(&s)
                    .map_err(|e| self.failed(key, format!("retain-until date {s:?}: {e}")))?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Some(Retention {
            version: get("x-amz-version-id").filter(|v| v != "null"),
            mode: get("x-amz-object-lock-mode"),
            until,
        }))
    }

    /// Locks the current version of `key` in `mode` until `until`.
    ///
    /// # Errors
    /// [`Error::ObjectLock`] (the store refuses to shorten a lock, or has no
    /// Object Lock).
    pub async fn retain(&self, key: &str, mode: LockMode, until: DateTime<Utc>) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.header(),
            iso(until)
        )
        .into_bytes();
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let resp = self
            .send(
                reqwest::Method::PUT,
                Some(key),
                &[("retention", "")],
                body,
                &[("content-md5", md5)],
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.refused(key, resp).await)
        }
    }

    /// Deletes one version of `key` for good.
    ///
    /// # Errors
    /// [`Error::ObjectLock`] (a locked version is refused by the store).
    pub async fn delete_version(&self, key: &str, version: &str) -> Result<()> {
        let resp = self
            .send(
                reqwest::Method::DELETE,
                Some(key),
                &[("versionId", version)],
                Vec::new(),
                &[],
            )
            .await?;
        if resp.status().is_success() || resp.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.refused(key, resp).await)
        }
    }
}

/// True for the objects a kept backup needs and the lock protects: packs
/// and manifests (index files are rebuilt from packs by `repair index`).
#[must_use]
pub fn is_locked_kind(key: &str) -> bool {
    key.starts_with(&format!("{}/", keys::PACK_DIR))
        || key.starts_with(&format!("{}/", keys::SNAPSHOT_DIR))
}

/// Locks packs and manifests as they are written (for `days`), and deletes
/// them by version only once unlocked.
#[derive(Debug)]
pub struct LockingBackend {
    inner: Arc<dyn Backend>,
    lock: Arc<S3ObjectLock>,
    mode: LockMode,
    days: u32,
}

impl LockingBackend {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(
        inner: Arc<dyn Backend>,
        lock: Arc<S3ObjectLock>,
        mode: LockMode,
        days: u32,
    ) -> Self {
        Self {
            inner,
            lock,
            mode,
            days,
        }
    }
}

#[async_trait]
impl Backend for LockingBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        self.inner.get_range_into(key, range, buf).await
    }
    fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        self.inner.get_range_blocking(key, range, buf)
    }
    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        self.inner.put(key, data, mode).await?;
        if is_locked_kind(key) {
            let until = Utc::now() + chrono::Duration::days(i64::from(self.days));
            self.lock.retain(key, self.mode, until).await?;
        }
        Ok(())
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        if !is_locked_kind(key) {
            return self.inner.delete(key).await;
        }
        let Some(r) = self.lock.retention(key).await? else {
            return Ok(());
        };
        if let Some(until) = r.until.filter(|_| r.locked_at(Utc::now())) {
            return Err(Error::Locked {
                location: self.location().to_string(),
                key: key.to_string(),
                until,
            });
        }
        match &r.version {
            Some(v) => self.lock.delete_version(key, v).await,
            None => self.inner.delete(key).await,
        }
    }
    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        self.inner.list(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published Signature Version 4 example (GET Object, "Example:
    /// GET Object" in the S3 API reference, signing with the Authorization
    /// header).
    #[test]
    fn signs_as_aws_documents() {
        let headers: Vec<(String, String)> = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            (
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            ("x-amz-date", "20130524T000000Z"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        let (signed, signature) = sign_v4(
            "GET",
            "/test.txt",
            "",
            &headers,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &Signer {
                amz_date: "20130524T000000Z",
                region: "us-east-1",
                secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            },
        );
        assert_eq!(signed, "host;range;x-amz-content-sha256;x-amz-date");
        assert_eq!(
            signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn keys_and_queries_are_encoded_as_s3_expects() {
        assert_eq!(
            uri_encode("repo/packs/ab/c d+e", true),
            "repo/packs/ab/c%20d%2Be"
        );
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("Az09-_.~", false), "Az09-_.~");
    }
}
