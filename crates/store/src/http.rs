//! The HTTP client every cloud store uses: object_store's own reqwest client,
//! with one rule added. object_store retries every 5xx answer (up to ten
//! times, minutes in all) and Cairn retries its generic errors once more on
//! top; a status that says the request itself is wrong or unsupported (a 4xx
//! other than the ones object_store turns into typed errors or retries, or 501
//! Not Implemented) can never succeed on a retry, so it is failed at once as a
//! [`FinalStatus`], which [`crate::Error::is_retryable`] recognises.

use async_trait::async_trait;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpService, ReqwestConnector,
};

/// An answer no retry can change: the status and the start of the body
/// (where S3, Azure and GCS put the error code and message).
#[derive(Debug, thiserror::Error)]
#[error("{method} {path} answered {status}{}", body_suffix(.body))]
pub struct FinalStatus {
    /// The HTTP status.
    pub status: u16,
    /// Request method.
    pub method: String,
    /// Request path (no query: signatures and tokens live there).
    pub path: String,
    /// The first 512 bytes of the body, as text.
    pub body: String,
}

fn body_suffix(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// True when `status` can never turn into a success by asking again.
/// Left to object_store: 304, 404, 409 and 412 (it maps them to typed
/// errors the engine relies on), 408 and 429 (retried with backoff), 416
/// (range handling), and every other 5xx (transient server trouble).
#[must_use]
pub fn is_final(status: u16) -> bool {
    match status {
        501 => true,
        304 | 404 | 408 | 409 | 412 | 416 | 429 => false,
        400..=499 => true,
        _ => false,
    }
}

/// A connector for object_store's builders: reqwest, plus [`is_final`].
#[derive(Debug, Default)]
pub struct FailFastConnector;

impl HttpConnector for FailFastConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(FailFast(
            ReqwestConnector::default().connect(options)?,
        )))
    }
}

#[derive(Debug)]
struct FailFast(HttpClient);

#[async_trait]
impl HttpService for FailFast {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let response = self.0.execute(req).await?;
        let status = response.status().as_u16();
        if !is_final(status) {
            return Ok(response);
        }
        let bytes = response.into_body().bytes().await.unwrap_or_default();
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        Err(HttpError::new(
            HttpErrorKind::Unknown,
            FinalStatus {
                status,
                method,
                path,
                body,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{is_final, FailFastConnector};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server that answers every request with `status` and counts them:
    /// the faults a real store will not produce on demand.
    fn answering(status: u16) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let body = "<Error><Code>NotImplemented</Code></Error>";
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    line.clear();
                }
            }
        });
        (url, count)
    }

    fn s3_at(url: &str, retries: usize) -> crate::RepoStore {
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_endpoint(url)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(object_store::RetryConfig {
                max_retries: retries,
                backoff: object_store::BackoffConfig {
                    init_backoff: std::time::Duration::from_millis(1),
                    max_backoff: std::time::Duration::from_millis(5),
                    base: 2.0,
                },
                retry_timeout: std::time::Duration::from_secs(60),
            })
            .with_http_connector(FailFastConnector)
            .build()
            .expect("client");
        crate::RepoStore::from_store(Arc::new(s3), "s3://b")
    }

    #[tokio::test]
    async fn a_final_status_fails_at_once_and_a_server_error_is_retried() {
        for (status, final_) in [(501, true), (403, true), (400, true), (503, false)] {
            let (url, count) = answering(status);
            let e = s3_at(&url, 3)
                .get("config")
                .await
                .expect_err("the server refuses");
            let requests = count.load(Ordering::SeqCst);
            if final_ {
                assert_eq!(requests, 1, "{status}: asked once");
                assert_eq!(e.final_status(), Some(status), "{e}");
                assert!(!e.is_retryable(), "{e}");
                assert!(e.to_string().contains(&status.to_string()), "{e}");
            } else {
                assert_eq!(requests, 4, "{status}: retried three times");
                assert_eq!(e.final_status(), None, "{e}");
                assert!(e.is_retryable(), "{e}");
            }
        }
    }

    #[test]
    fn which_statuses_are_final() {
        for s in [400, 401, 403, 405, 411, 501] {
            assert!(is_final(s), "{s}");
        }
        for s in [
            200, 206, 304, 404, 408, 409, 412, 416, 429, 500, 502, 503, 504,
        ] {
            assert!(!is_final(s), "{s}");
        }
    }
}
