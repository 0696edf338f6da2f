//! The client against a stand-in that answers exactly as the real server did
//! in the recorded exchanges of `../shared/fixtures/qdrant-api/` (Qdrant
//! 1.18.3): every typed answer parses, every recorded error becomes the
//! right kind of error with the server's message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_qdrant::{ApiKey, Client, ClientOptions, ErrorKind, ReplicaState};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn recordings(name: &str) -> Option<Vec<Value>> {
    // Cargo sets it at run time; the compile-time value is a fallback.
    let p = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../../shared/fixtures/qdrant-api")
        .join(name);
    match std::fs::read(&p) {
        Ok(b) => Some(serde_json::from_slice(&b).expect("recording is JSON")),
        Err(_) => {
            eprintln!("SKIPPED: {} is absent (CI always has it)", p.display());
            None
        }
    }
}

/// Serves the first recording of each (method, path without query). Binary
/// bodies (`<N bytes of TYPE>`) are served as N bytes.
async fn stand_in(exchanges: Vec<Value>) -> String {
    let mut routes: HashMap<(String, String), (u16, Vec<u8>, bool)> = HashMap::new();
    for e in exchanges {
        let method = e["method"].as_str().expect("method").to_string();
        let path = e["path"].as_str().expect("path");
        let path = format!("/{}", path.split('?').next().unwrap_or(path));
        let status = u16::try_from(e["status"].as_u64().expect("status")).expect("u16");
        let (body, json) = match &e["body"] {
            Value::String(s) if s.starts_with('<') && s.contains(" bytes of ") => {
                let n: usize = s[1..].split(' ').next().expect("n").parse().expect("count");
                (vec![7u8; n], false)
            }
            Value::String(s) => (s.clone().into_bytes(), false),
            other => (other.to_string().into_bytes(), true),
        };
        routes.entry((method, path)).or_insert((status, body, json));
    }
    let routes = Arc::new(routes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let routes = Arc::clone(&routes);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut first = text.lines().next().unwrap_or_default().split(' ');
                let method = first.next().unwrap_or_default().to_string();
                let target = first.next().unwrap_or_default();
                let path = target.split('?').next().unwrap_or(target).to_string();
                let (status, body, json) = routes.get(&(method, path)).cloned().unwrap_or((
                    404,
                    b"no recording".to_vec(),
                    false,
                ));
                let ctype = if json {
                    "application/json"
                } else {
                    "text/plain"
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    url
}

fn client(url: &str, key: Option<&str>) -> Client {
    Client::new(
        url,
        ClientOptions {
            api_key: key.and_then(ApiKey::new),
            attempts: 1,
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

#[tokio::test]
async fn three_node_recording() {
    let Some(rec) = recordings("cluster-3-nodes.json") else {
        return;
    };
    let url = stand_in(rec).await;
    let c = client(&url, None);
    assert_eq!(c.version().await.expect("version").version, "1.18.3");
    let cluster = c.cluster().await.expect("cluster");
    assert_eq!(cluster.status, "enabled");
    assert_eq!(cluster.peers.len(), 3);
    assert!(cluster.peers.values().all(|p| p.uri.starts_with("http://")));
    assert_eq!(c.collections().await.expect("collections"), vec!["docs"]);
    let info = c.collection_info("docs").await.expect("info");
    let params = info.params().expect("params");
    assert_eq!((params.shard_number, params.replication_factor), (3, 2));
    assert_eq!(params.vectors["size"], 64);
    assert_eq!(info.payload_schema["category"].data_type, "keyword");
    assert!(info.config.get("hnsw_config").is_some());
    assert!(c.aliases().await.expect("aliases").is_empty());
    let placement = c.collection_cluster("docs").await.expect("placement");
    assert_eq!(placement.local_shards.len(), 2);
    assert_eq!(placement.remote_shards.len(), 4);
    assert!(placement
        .local_shards
        .iter()
        .all(|s| s.state == ReplicaState::Active && s.points_count > 0));

    let missing = c.collection_info("missing").await.expect_err("404");
    assert!(missing.is_not_found());
    assert!(missing.to_string().contains("doesn't exist"), "{missing}");

    let listed = c.list_collection_snapshots("docs").await.expect("list");
    assert_eq!(listed[0].checksum.as_deref().map(str::len), Some(64));
    let made = c.create_shard_snapshot("docs", 0).await.expect("create");
    assert!(made.name.starts_with("docs-shard-0-"));
    assert_eq!(
        c.list_shard_snapshots("docs", 0).await.expect("list").len(),
        1
    );
    c.delete_shard_snapshot("docs", 0, &made.name)
        .await
        .expect("delete");

    // The streamed shard snapshot arrives whole.
    let mut stream = c
        .stream_shard_snapshot("docs", 0, Duration::from_secs(5))
        .await
        .expect("stream");
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        n += chunk.expect("chunk").len();
    }
    assert_eq!(n, 684_032);
    // A shard the node does not hold, and one that does not exist.
    let e = c
        .stream_shard_snapshot("docs", 1, Duration::from_secs(5))
        .await
        .err()
        .expect("400");
    assert_eq!(e.status(), Some(400));
    assert!(
        e.to_string().contains("not a local or queue proxy shard"),
        "{e}"
    );
    assert!(e.to_string().contains("collection docs, shard 1"), "{e}");
    let e = c
        .stream_shard_snapshot("docs", 99, Duration::from_secs(5))
        .await
        .err()
        .expect("404");
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn api_key_recording() {
    let Some(rec) = recordings("single-node-api-key.json") else {
        return;
    };
    let c = client(&stand_in(rec.clone()).await, Some("a-key"));
    let status = c.cluster().await.expect("cluster");
    assert_eq!(status.status, "disabled");
    assert!(status.peer_id.is_none() && status.peers.is_empty());
    let placement = c.collection_cluster("docs").await.expect("placement");
    assert_eq!(placement.shard_count, 1);

    // The recorded 401 answers (no key, wrong key) are plain text.
    let unauthorized: Vec<Value> = rec
        .into_iter()
        .filter(|e| e["label"] == "wrong api key")
        .collect();
    assert_eq!(unauthorized.len(), 1);
    let c = client(&stand_in(unauthorized).await, Some("wrong"));
    let e = c.collections().await.expect_err("401");
    assert!(matches!(e.kind, ErrorKind::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("Invalid API key or JWT"), "{e}");
    assert!(!e.to_string().contains("wrong\""), "{e}");
}
