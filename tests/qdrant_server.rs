//! Real Qdrant servers for the tests (../shared/bin/qdrant, started with
//! ../shared/bin/qdrant-up.sh on loopback and stopped on drop), data helpers
//! over the project's own client, and a fault-injecting proxy that stands
//! between Cairn and a real node for the faults a real server cannot be made
//! to produce on demand: another version, a stream cut in the middle, 5xx.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use cairn_qdrant::{Client, ClientOptions};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::project_dir;

/// `../shared/bin/qdrant-up.sh`, or `None` with a visible notice.
pub fn qdrant_up(test: &str) -> Option<PathBuf> {
    let script = project_dir().join("../shared/bin/qdrant-up.sh");
    let bin = project_dir().join("../shared/bin/qdrant");
    if script.is_file() && bin.is_file() {
        Some(script)
    } else {
        crate::support::skip(test, "no Qdrant server at ../shared/bin/qdrant");
        None
    }
}

/// `../shared/bin/qdrant-1.17` (Qdrant 1.17.1, for tests across versions),
/// or `None` with a visible notice.
pub fn qdrant_1_17(test: &str) -> Option<String> {
    let bin = project_dir().join("../shared/bin/qdrant-1.17");
    if bin.is_file() {
        Some(bin.display().to_string())
    } else {
        crate::support::skip(test, "no Qdrant 1.17 server at ../shared/bin/qdrant-1.17");
        None
    }
}

/// Real Qdrant nodes on loopback, stopped on drop.
pub struct Qdrant {
    script: PathBuf,
    dir: TempDir,
    pub urls: Vec<String>,
}

impl Qdrant {
    /// Starts `nodes` nodes (a cluster when more than one), or `None` when
    /// the binary is absent. `api_key` makes them require a key.
    pub fn start(test: &str, nodes: u16, api_key: Option<&str>) -> Option<Self> {
        Self::launch(test, nodes, api_key, false, &[])
    }

    /// One node with cluster mode on (Qdrant's distributed mode, which
    /// custom sharding needs).
    pub fn start_single_in_cluster_mode(test: &str) -> Option<Self> {
        Self::launch(test, 1, None, true, &[])
    }

    /// Nodes with extra `QDRANT__…` settings.
    pub fn start_with(
        test: &str,
        nodes: u16,
        api_key: Option<&str>,
        settings: &[(&str, &str)],
    ) -> Option<Self> {
        Self::launch(test, nodes, api_key, false, settings)
    }

    fn launch(
        test: &str,
        nodes: u16,
        api_key: Option<&str>,
        cluster_mode: bool,
        settings: &[(&str, &str)],
    ) -> Option<Self> {
        let script = qdrant_up(test)?;
        let dir = TempDir::new().expect("tempdir");
        // Node i listens on base + 10 i + {0, 1, 2} (qdrant-up.sh).
        let base = crate::support::reserve_ports(10 * nodes);
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(dir.path())
            .arg(nodes.to_string())
            .arg(base.to_string());
        if cluster_mode {
            // qdrant-up.sh passes the environment through; a lone node in
            // cluster mode needs its p2p port and its own URI.
            let p2p = base + 2;
            cmd.env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", p2p.to_string())
                .env("QDRANT_BIN", fake_bin_with_uri(dir.path(), p2p));
        }
        match api_key {
            Some(k) => cmd.env("QDRANT_API_KEY", k),
            None => cmd.env_remove("QDRANT_API_KEY"),
        };
        cmd.envs(settings.iter().copied());
        let out = cmd.output().expect("run qdrant-up.sh");
        let mut me = Self {
            script,
            urls: Vec::new(),
            dir,
        };
        assert!(
            out.status.success(),
            "qdrant-up.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            me.logs()
        );
        me.urls = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .map(str::to_string)
            .collect();
        Some(me)
    }

    /// All URLs, comma-separated (as `--qdrant` takes them).
    pub fn url_list(&self) -> String {
        self.urls.join(",")
    }

    /// The nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..3 {
            let p = self.dir.path().join(format!("node{i}/log"));
            if let Ok(l) = std::fs::read_to_string(&p) {
                let tail: Vec<&str> = l.lines().rev().take(20).collect();
                out.push_str(&format!("--- {}\n", p.display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Files under the nodes' snapshot directories (leftovers).
    pub fn snapshot_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack: Vec<PathBuf> = (0..3)
            .map(|i| self.dir.path().join(format!("node{i}/snapshots")))
            .filter(|p| p.is_dir())
            .collect();
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "snapshot") {
                    out.push(p);
                }
            }
        }
        out
    }
}

impl Drop for Qdrant {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("--down")
            .arg(self.dir.path())
            .output();
    }
}

/// A wrapper that starts ../shared/bin/qdrant with `--uri` for its p2p port.
fn fake_bin_with_uri(dir: &std::path::Path, p2p: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = project_dir().join("../shared/bin/qdrant");
    let path = dir.join("qdrant-with-uri");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec '{}' --uri http://127.0.0.1:{p2p} \"$@\"\n",
            real.display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// An HS256 JWT over `claims`, signed with `key` (Qdrant's RBAC tokens).
pub fn jwt(key: &str, claims: &Value) -> String {
    use sha2::{Digest, Sha256};
    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
    let body = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    // HMAC-SHA256 (RFC 2104) with a key shorter than the block.
    let mut k = key.as_bytes().to_vec();
    k.resize(64, 0);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body.as_bytes())
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("{body}.{}", b64(&mac))
}

/// Waits until the collection is settled on every node: green, and the
/// same segment count twice half a second apart (Qdrant reports green
/// between a write and the optimization it triggers, and each node reports
/// only the replicas it holds).
pub fn wait_settled(urls: &[String], collection: &str) {
    for url in urls {
        let c = client(url, None);
        let mut last = None;
        for i in 0..600 {
            let info = block(c.collection_info(collection)).expect("info");
            let now = (info.status == "green").then_some(info.segments_count);
            if now.is_some() && now == last {
                break;
            }
            last = now;
            assert!(i < 599, "collection {collection} did not settle on {url}");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

/// Runs a future of the client on a private runtime.
pub fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn client(url: &str, key: Option<&str>) -> Client {
    Client::new(
        url,
        ClientOptions {
            api_key: key.and_then(cairn_qdrant::ApiKey::new),
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

/// Deterministic unit vectors clustered around 16 centres.
pub fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % 16];
            let v: Vec<f32> = c.iter().map(|a| a + 0.3 * next()).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
            v.into_iter().map(|a| a / norm).collect()
        })
        .collect()
}

/// Creates `collection`; `body` is the `PUT /collections/{c}` body.
pub fn create(url: &str, key: Option<&str>, collection: &str, body: Value) {
    block(client(url, key).create_collection(collection, &body)).expect("create collection");
}

/// Upserts points `ids` with vectors from `seed`; `shard_key` routes them.
pub fn upsert(
    url: &str,
    key: Option<&str>,
    collection: &str,
    ids: std::ops::Range<u64>,
    dim: usize,
    seed: u64,
    shard_key: Option<&str>,
) {
    let c = client(url, key);
    let ids: Vec<u64> = ids.collect();
    let vs = vectors(ids.len(), dim, seed);
    for (chunk_ids, chunk_vs) in ids.chunks(500).zip(vs.chunks(500)) {
        let points: Vec<Value> = chunk_ids
            .iter()
            .zip(chunk_vs)
            .map(|(id, v)| json!({ "id": id, "vector": v, "payload": { "category": format!("c{}", id % 7), "n": id } }))
            .collect();
        let body = match shard_key {
            Some(k) => json!({ "points": points, "shard_key": k }),
            None => json!({ "points": points }),
        };
        block(c.upsert(collection, &body)).expect("upsert");
    }
}

/// Fixed query vectors.
pub fn queries(dim: usize) -> Vec<Vec<f32>> {
    vectors(5, dim, 991)
}

/// Exact top-10 ids for every fixed query, and the exact points count.
pub fn fingerprint(
    url: &str,
    key: Option<&str>,
    collection: &str,
    dim: usize,
    extra: Option<&Value>,
) -> (u64, Vec<Vec<Value>>) {
    let c = client(url, key);
    let count = block(c.count_exact(collection)).expect("count");
    let tops = queries(dim)
        .iter()
        .map(|q| block(c.exact_top(collection, q, 10, extra)).expect("query"))
        .collect();
    (count, tops)
}

/// What the proxy does to requests.
#[derive(Default)]
pub struct Faults {
    /// Answer `GET /` with this version instead of the real one.
    pub version: Option<String>,
    /// Cut responses to requests whose path contains this after this many
    /// bytes, for the first `cut_times` such requests (`usize::MAX`: always).
    pub cut: Option<(String, usize)>,
    pub cut_times: usize,
    /// Answer 503 to the first `fail_5xx` requests whose path contains this.
    pub fail_5xx: Option<(String, usize)>,
    /// Requests whose path contains this are accepted and then neither read
    /// nor answered (a node that hangs), for up to a minute.
    pub hang: Option<String>,
    /// Answer 404 as a server without the route does to requests whose
    /// path contains this.
    pub not_found: Option<String>,
}

/// A proxy in front of a real node: forwards every request as it is (one
/// request per connection), except for the faults it was given.
pub struct Proxy {
    pub url: String,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(upstream: &str, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let faults = Arc::new(Mutex::new(faults));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let upstream = upstream.clone();
                let faults = Arc::clone(&faults);
                let seen = Arc::clone(&seen2);
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &faults, &seen);
                });
            }
        });
        Self { url, seen }
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    faults: &Mutex<Faults>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // Read the request head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    seen.lock().expect("lock").push(line.clone());
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut cut = None;
    {
        let mut f = faults.lock().expect("lock");
        if method == "GET" && path == "/" {
            if let Some(v) = &f.version {
                let body = json!({ "title": "qdrant - vector search engine", "version": v, "commit": "0000000" }).to_string();
                write!(client, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())?;
                return Ok(());
            }
        }
        if f.hang.as_ref().is_some_and(|p| path.contains(p.as_str())) {
            drop(f);
            std::thread::sleep(std::time::Duration::from_secs(60));
            return Ok(());
        }
        if f.not_found
            .as_ref()
            .is_some_and(|p| path.contains(p.as_str()))
        {
            write!(
                client,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        if let Some((p, n)) = &mut f.fail_5xx {
            if path.contains(p.as_str()) && *n > 0 {
                *n -= 1;
                let body = r#"{"status":{"error":"Service unavailable (injected)"},"time":0.0}"#;
                write!(client, "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())?;
                return Ok(());
            }
        }
        if let Some((p, bytes)) = f.cut.clone() {
            if path.contains(p.as_str()) && f.cut_times > 0 {
                f.cut_times = f.cut_times.saturating_sub(1);
                cut = Some(bytes);
            }
        }
    }
    // One request per connection: ask the node to close after answering.
    let mut forwarded = String::new();
    for (i, l) in text.split("\r\n").enumerate() {
        if i > 0 && (l.is_empty() || l.to_ascii_lowercase().starts_with("connection:")) {
            continue;
        }
        forwarded.push_str(l);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(forwarded.as_bytes())?;
    let mut up_read = up.try_clone()?;
    let mut client_read = client.try_clone()?;
    // Request body (if any) flows to the node while the answer flows back.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    match cut {
        None => {
            std::io::copy(&mut up_read, &mut client)?;
        }
        Some(limit) => {
            let _ = std::io::copy(&mut (&mut up_read).take(limit as u64), &mut client);
            // The node "dies": the connection drops mid-body.
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
