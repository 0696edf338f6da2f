//! `cairn daemon` and `cairn backup --schedule`, as real processes on a real
//! repository: schedules at second granularity, retention after each run,
//! catch-up after downtime, two daemons on one repository, SIGKILL and
//! SIGTERM, metrics, API auth and webhooks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{cairn_bin, random_bytes};

/// A running `cairn daemon`, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts a daemon on `config` on a free loopback port, with `envs`.
    pub fn start(dir: &Path, config: &Path, envs: &[(&str, &str)]) -> Self {
        Self::start_on(dir, config, envs, "127.0.0.1:0")
    }

    pub fn start_on(dir: &Path, config: &Path, envs: &[(&str, &str)], listen: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("daemon-{n}.log"));
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["-v", "daemon", "--config"])
            .arg(config)
            .args(["--listen", listen, "--stop-timeout", "20"])
            .env("CAIRN_CACHE_DIR", dir.join(format!("cache-{n}")))
            .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
            .env_remove("CAIRN_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cairn daemon");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read the daemon's first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "daemon did not start: {first:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Self {
            child: Some(child),
            addr,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to a child process this test started.
        #[allow(unsafe_code)]
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({sig})");
    }

    /// SIGTERM, then waits (at most `within`) for a clean exit.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if t.elapsed() > within {
                let _ = child.kill();
                panic!(
                    "the daemon did not exit within {within:?} of SIGTERM; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http(&self.addr, "GET", path, token, None)
    }

    pub fn json(&self, path: &str, token: Option<&str>) -> Value {
        let (status, body) = self.get(path, token);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 request over a fresh connection: the status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).expect("send");
    // Read until the body is whole (some servers keep the connection open).
    let mut resp = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).expect("read");
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&resp);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if len.is_some_and(|len| body.len() >= len)
                || (head.contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n"))
            {
                break;
            }
        }
    }
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status: u16 = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"));
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Polls `f` every 50 ms until it returns `Some`, at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A repository, a data directory and a config with one files source.
pub struct Setup {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
}

impl Setup {
    /// `schedules` is TOML appended after the repository and source.
    pub fn new(data_bytes: usize, schedules: &str) -> Self {
        let dir = TempDir::new().expect("tempdir");
        let repo = dir.path().join("repo");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join("a.bin"), random_bytes(data_bytes, 7)).expect("write");
        let out = Command::new(cairn_bin())
            .args(["--repo"])
            .arg(&repo)
            .args(["init", "--quiet"])
            .args(crate::support::CHEAP_KDF)
            .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
            .env("CAIRN_CACHE_DIR", dir.path().join("cache-init"))
            .output()
            .expect("init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("cairn.toml");
        std::fs::write(
            &config,
            format!(
                "[repositories.main]\nlocation = {:?}\n\n[sources.files]\npaths = [{:?}]\n\n{schedules}",
                repo.display().to_string(),
                data.display().to_string()
            ),
        )
        .expect("config");
        Self {
            dir,
            repo,
            data,
            config,
        }
    }

    pub fn cairn(&self, args: &[&str]) -> std::process::Output {
        Command::new(cairn_bin())
            .arg("--repo")
            .arg(&self.repo)
            .args(args)
            .env("CAIRN_CACHE_DIR", self.dir.path().join("cache-cli"))
            .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
            .output()
            .expect("run cairn")
    }

    /// `cairn check` passes.
    pub fn assert_check_clean(&self) {
        let check = self.cairn(&["check"]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    pub fn runs(&self, d: &Daemon, job: &str) -> Vec<Value> {
        d.json(&format!("/api/v1/runs?job={job}&limit=1000"), None)
            .as_array()
            .expect("array")
            .clone()
    }
}

fn states(runs: &[Value], state: &str) -> Vec<Value> {
    runs.iter()
        .filter(|r| r["state"] == state)
        .cloned()
        .collect()
}

#[test]
fn schedules_at_second_granularity_run_and_apply_retention_after_each_run() {
    let s = Setup::new(64 * 1024, "[schedules.fast]\nsource = \"files\"\ncron = \"*/1 * * * * *\"\n[schedules.fast.retention]\nkeep_last = 1\n");
    let d = Daemon::start(s.dir.path(), &s.config, &[]);
    let done = wait_for("three successful runs", Duration::from_secs(60), || {
        let ok = states(&s.runs(&d, "backup-fast"), "SUCCEEDED");
        (ok.len() >= 3).then_some(ok)
    });
    let st = d.terminate(Duration::from_secs(30));
    assert!(st.success(), "SIGTERM: exit {st:?}");
    // Retention ran after each run: the first removed nothing, every later
    // one removed the run before it (keep_last = 1).
    let mut done = done;
    done.sort_by_key(|r| r["seq"].as_u64());
    assert_eq!(done[0]["forgotten"], 0, "{:#?}", done[0]);
    for r in &done[1..] {
        assert_eq!(r["forgotten"], 1, "{r:#}");
        assert_eq!(r["trigger"], "schedule");
        assert!(r["scheduled_for"].as_str().is_some());
    }
    // Distinct fire times, one second apart at least.
    let mut fires: Vec<&str> = done
        .iter()
        .map(|r| r["scheduled_for"].as_str().expect("fire"))
        .collect();
    fires.dedup();
    assert_eq!(fires.len(), done.len());
    let snaps: Value =
        serde_json::from_slice(&s.cairn(&["snapshots", "--json"]).stdout).expect("json");
    let tagged = snaps
        .as_array()
        .expect("array")
        .iter()
        .filter(|x| {
            x["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "schedule:fast"))
        })
        .count();
    assert!(tagged <= 2, "keep_last 1 leaves at most the last run's backup (and one whose retention SIGTERM cut short): {snaps:#}");
    s.assert_check_clean();
}

#[test]
fn a_missed_run_is_caught_up_once_after_a_restart() {
    let s = Setup::new(
        16 * 1024,
        "[schedules.every2]\nsource = \"files\"\ncron = \"*/2 * * * * *\"\n",
    );
    let d = Daemon::start(s.dir.path(), &s.config, &[]);
    wait_for("a first run", Duration::from_secs(30), || {
        (!states(&s.runs(&d, "backup-every2"), "SUCCEEDED").is_empty()).then_some(())
    });
    assert!(d.terminate(Duration::from_secs(30)).success());
    // Down for three fire times at least.
    std::thread::sleep(Duration::from_millis(6500));
    let d = Daemon::start(s.dir.path(), &s.config, &[]);
    let catchup = wait_for("the catch-up run", Duration::from_secs(30), || {
        s.runs(&d, "backup-every2")
            .into_iter()
            .find(|r| r["trigger"] == "catch-up" && r["state"] == "SUCCEEDED")
    });
    let reason = catchup["reason"].as_str().expect("a catch-up says why");
    assert!(reason.starts_with("catch-up: "), "{reason}");
    let missed: u64 = reason["catch-up: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(missed >= 3, "{reason}");
    // Normal runs follow; there is one catch-up only.
    wait_for(
        "a scheduled run after the catch-up",
        Duration::from_secs(30),
        || {
            s.runs(&d, "backup-every2")
                .into_iter()
                .find(|r| r["trigger"] == "schedule" && r["seq"].as_u64() > catchup["seq"].as_u64())
        },
    );
    assert!(d.terminate(Duration::from_secs(30)).success());
    let d2 = Daemon::start(s.dir.path(), &s.config, &[]);
    let runs = s.runs(&d2, "backup-every2");
    assert_eq!(
        runs.iter().filter(|r| r["trigger"] == "catch-up").count(),
        1,
        "{runs:#?}"
    );
}

/// Start and end times of the runs that ran (SUCCEEDED or FAILED).
fn intervals(
    runs: &[Value],
) -> Vec<(
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    u64,
)> {
    let t = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time"))
            .expect("rfc3339")
            .with_timezone(&chrono::Utc)
    };
    let mut out: Vec<_> = runs
        .iter()
        .filter(|r| r["state"] == "SUCCEEDED" || r["state"] == "FAILED")
        .map(|r| {
            (
                t(&r["started"]),
                t(&r["finished"]),
                r["pid"].as_u64().expect("pid"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_daemons_on_one_repository_never_run_one_schedule_twice_at_once() {
    // 24 MiB of fresh data a run: long enough that runs of the two daemons
    // would overlap if nothing stopped them.
    let s = Setup::new(
        24 << 20,
        "[schedules.shared]\nsource = \"files\"\ncron = \"*/1 * * * * *\"\n",
    );
    let env = [("CAIRN_LEASE_SECONDS", "20")];
    let a = Daemon::start(s.dir.path(), &s.config, &env);
    let b = Daemon::start(s.dir.path(), &s.config, &env);
    // New data every round, so each run reads and writes.
    let mut round = 0u64;
    wait_for("runs from both daemons", Duration::from_secs(120), || {
        round += 1;
        std::fs::write(s.data.join("a.bin"), random_bytes(24 << 20, round * 2)).ok()?;
        std::thread::sleep(Duration::from_millis(400));
        let runs = s.runs(&a, "backup-shared");
        let ok = states(&runs, "SUCCEEDED");
        let pids: std::collections::BTreeSet<u64> =
            ok.iter().filter_map(|r| r["pid"].as_u64()).collect();
        (pids.len() == 2 && ok.len() >= 8).then_some(())
    });
    // Deterministic contention: daemon A is stopped in the middle of a run
    // it holds; B's "Backup now" must be skipped while A's record is current.
    assert!(a.terminate(Duration::from_secs(30)).success());
    assert!(b.terminate(Duration::from_secs(30)).success());
    let cfg = std::fs::read_to_string(&s.config).expect("read");
    std::fs::write(&s.config, cfg.replace("*/1 * * * * *", "0 0 0 1 1 *")).expect("write");
    std::fs::write(s.data.join("a.bin"), random_bytes(64 << 20, 999)).expect("write");
    let a = Daemon::start(s.dir.path(), &s.config, &env);
    let b = Daemon::start(s.dir.path(), &s.config, &env);
    let (st, _) = http(
        &a.addr,
        "POST",
        "/api/v1/schedules/shared/run",
        None,
        Some(""),
    );
    assert_eq!(st, 202);
    let running = wait_for(
        "A's manual run in progress",
        Duration::from_secs(30),
        || {
            s.runs(&a, "backup-shared")
                .into_iter()
                .find(|r| r["state"] == "RUNNING" && r["trigger"] == "manual")
        },
    );
    a.signal(libc::SIGSTOP);
    let (st, _) = http(
        &b.addr,
        "POST",
        "/api/v1/schedules/shared/run",
        None,
        Some(""),
    );
    assert_eq!(st, 202);
    let skipped = wait_for("B's run skipped", Duration::from_secs(15), || {
        s.runs(&b, "backup-shared")
            .into_iter()
            .find(|r| r["state"] == "SKIPPED" && r["trigger"] == "manual")
    });
    let reason = skipped["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("run {} ", running["seq"])) && reason.contains("in progress"),
        "{reason}"
    );
    a.signal(libc::SIGCONT);
    wait_for("A's run finished", Duration::from_secs(60), || {
        s.runs(&b, "backup-shared")
            .into_iter()
            .find(|r| r["seq"] == running["seq"] && r["state"] == "SUCCEEDED")
    });
    // Over every round: no two runs overlap in time, and no fire time was
    // served twice.
    let all = s.runs(&b, "backup-shared");
    let iv = intervals(&all);
    for w in iv.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs overlap: {:?} and {:?}", w[0], w[1]);
    }
    let mut fires: Vec<&str> = all
        .iter()
        .filter(|r| r["state"] != "SKIPPED")
        .filter_map(|r| r["scheduled_for"].as_str())
        .collect();
    let n = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), n, "a fire time was served twice: {all:#?}");
    s.assert_check_clean();
}

#[test]
fn a_run_killed_mid_way_is_recorded_failed_and_the_next_run_succeeds() {
    let s = Setup::new(
        96 << 20,
        "[schedules.big]\nsource = \"files\"\ncron = \"0 0 0 1 1 *\"\n",
    );
    let d = Daemon::start(s.dir.path(), &s.config, &[]);
    let (st, _) = http(&d.addr, "POST", "/api/v1/schedules/big/run", None, Some(""));
    assert_eq!(st, 202);
    let running = wait_for("the run in progress", Duration::from_secs(30), || {
        s.runs(&d, "backup-big")
            .into_iter()
            .find(|r| r["state"] == "RUNNING")
    });
    d.kill9();
    // `cairn backup --schedule` takes the daemon's path: it finds the run's
    // process gone, records the run as failed, and runs.
    let out = Command::new(cairn_bin())
        .args(["--json", "backup", "--schedule", "big", "--config"])
        .arg(&s.config)
        .env("CAIRN_CACHE_DIR", s.dir.path().join("cache-cli"))
        .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
        .output()
        .expect("backup --schedule");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rec["state"], "SUCCEEDED");
    assert_eq!(rec["trigger"], "cli");
    assert_eq!(rec["seq"], running["seq"].as_u64().expect("seq") + 1);
    let d = Daemon::start(s.dir.path(), &s.config, &[]);
    let runs = s.runs(&d, "backup-big");
    let killed = runs
        .iter()
        .find(|r| r["seq"] == running["seq"])
        .expect("the killed run");
    assert_eq!(killed["state"], "FAILED", "{killed:#}");
    assert!(
        killed["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("interrupted")),
        "{killed:#}"
    );
    s.assert_check_clean();
    // SIGTERM during a run: the run stops, is recorded, and the daemon exits in time.
    let (st, _) = http(&d.addr, "POST", "/api/v1/schedules/big/run", None, Some(""));
    assert_eq!(st, 202);
    std::fs::write(s.data.join("b.bin"), random_bytes(96 << 20, 3)).expect("write");
    let t = Instant::now();
    assert!(d.terminate(Duration::from_secs(30)).success());
    eprintln!("SIGTERM to exit: {:?}", t.elapsed());
    s.assert_check_clean();
}

#[test]
fn metrics_parse_as_prometheus_text_and_match_the_runs() {
    let s = Setup::new(256 * 1024, "[schedules.m]\nsource = \"files\"\ncron = \"0 0 0 1 1 *\"\n[schedules.m.retention]\ndays = 7\n");
    let d = Daemon::start(s.dir.path(), &s.config, &[]);
    for _ in 0..2 {
        let before = states(&s.runs(&d, "backup-m"), "SUCCEEDED").len();
        http(&d.addr, "POST", "/api/v1/schedules/m/run", None, Some(""));
        wait_for("the run", Duration::from_secs(30), || {
            (states(&s.runs(&d, "backup-m"), "SUCCEEDED").len() > before).then_some(())
        });
    }
    let runs = states(&s.runs(&d, "backup-m"), "SUCCEEDED");
    let (st, text) = d.get("/metrics", None);
    assert_eq!(st, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, state: Option<&str>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("schedule").is_some_and(|v| v == "m")
                    && state.is_none_or(|st| s.labels.get("state") == Some(st))
            })
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name}: unexpected type"),
        }
    };
    let newest = &runs[0];
    assert_eq!(value("cairn_schedule_runs", Some("SUCCEEDED")), 2.0);
    assert_eq!(value("cairn_schedule_runs", Some("FAILED")), 0.0);
    assert_eq!(
        value("cairn_schedule_last_bytes_read", None),
        newest["bytes_read"].as_f64().expect("n")
    );
    assert_eq!(
        value("cairn_schedule_last_bytes_read", None),
        256.0 * 1024.0
    );
    assert_eq!(
        value("cairn_schedule_last_bytes_uploaded", None),
        newest["bytes_uploaded"].as_f64().expect("n")
    );
    assert_eq!(value("cairn_schedule_last_run_failed", None), 0.0);
    let finished =
        chrono::DateTime::parse_from_rfc3339(newest["finished"].as_str().expect("t")).expect("t");
    #[allow(clippy::cast_precision_loss)]
    let ts = finished.timestamp() as f64;
    assert_eq!(
        value("cairn_schedule_last_success_timestamp_seconds", None),
        ts
    );
    let snaps = scrape
        .samples
        .iter()
        .find(|x| x.metric == "cairn_repository_snapshots")
        .expect("snapshots metric");
    assert!(
        matches!(snaps.value, prometheus_parse::Value::Gauge(v) if v == 2.0),
        "{text}"
    );
    let first_added = runs[1]["bytes_added"].as_u64().expect("n");
    assert!(
        first_added >= 256 * 1024,
        "the first run added its data: {first_added}"
    );
}

#[test]
fn the_api_needs_its_token_and_never_prints_it() {
    let s = Setup::new(
        1024,
        "[schedules.t]\nsource = \"files\"\ncron = \"@yearly\"\n",
    );
    let token = "tok-3f9a1c77e2b84d55";
    // Beyond loopback without a token: refused, saying why.
    let out = Command::new(cairn_bin())
        .args(["daemon", "--config"])
        .arg(&s.config)
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("CAIRN_API_TOKEN")
        .output()
        .expect("daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0") && err.contains("CAIRN_API_TOKEN"),
        "{err}"
    );
    let d = Daemon::start_on(
        s.dir.path(),
        &s.config,
        &[("CAIRN_API_TOKEN", token)],
        "0.0.0.0:0",
    );
    let addr = d.addr.replace("0.0.0.0", "127.0.0.1");
    for path in [
        "/api/v1/health",
        "/api/v1/runs",
        "/api/v1/backups",
        "/metrics",
        "/api/v1/schedules",
    ] {
        let (st, body) = http(&addr, "GET", path, None, None);
        assert_eq!(st, 401, "{path} without a token: {body}");
        let (st, body) = http(&addr, "GET", path, Some("wrong"), None);
        assert_eq!(st, 401, "{path} with a wrong token: {body}");
        assert!(!body.contains(token));
        let (st, body) = http(&addr, "GET", path, Some(token), None);
        assert_eq!(st, 200, "{path} with the token: {body}");
        assert!(!body.contains(token), "{path} echoes the token");
    }
    let (st, _) = http(&addr, "POST", "/api/v1/schedules/t/run", None, Some(""));
    assert_eq!(st, 401);
    // Public: the page, liveness and the API document.
    for path in ["/", "/healthz", "/openapi.json"] {
        assert_eq!(http(&addr, "GET", path, None, None).0, 200, "{path}");
    }
    // An error answer does not carry it either.
    let (st, body) = http(&addr, "GET", "/api/v1/backups/ffffffff", Some(token), None);
    assert_eq!(st, 404, "{body}");
    assert!(!body.contains(token));
    let (st, body) = http(
        &addr,
        "POST",
        "/api/v1/schedules",
        Some(token),
        Some("{\"name\":\"x\",\"source\":\"nope\",\"cron\":\"@daily\"}"),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("no source named \\\"nope\\\""), "{body}");
    let log = d.log.clone();
    let st = d.terminate(Duration::from_secs(30));
    assert!(
        st.success(),
        "SIGTERM: {st:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let d_log = std::fs::read_to_string(log).expect("log");
    assert!(
        d_log.contains("daemon started"),
        "verbose log expected: {d_log}"
    );
    assert!(!d_log.contains(token), "the token is in the log:\n{d_log}");
}

/// A one-shot HTTP receiver: the bodies POSTed to it.
fn webhook_receiver() -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        let _ = tx.send(body.to_string());
                        break;
                    }
                }
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, rx)
}

#[test]
fn a_failed_run_is_posted_to_the_webhooks() {
    let (json_addr, json_rx) = webhook_receiver();
    let (slack_addr, slack_rx) = webhook_receiver();
    let s = Setup::new(
        1024,
        &format!(
            "[schedules.broken]\nsource = \"gone\"\ncron = \"@yearly\"\n\n[[webhooks]]\nurl = \"http://{json_addr}/hook\"\n\n[[webhooks]]\nurl_env = \"SLACK_URL\"\nformat = \"slack\"\n"
        ),
    );
    // A source whose files are gone: the run fails.
    let cfg = std::fs::read_to_string(&s.config).expect("read");
    let cfg = cfg.replacen(
        "[sources.files]",
        "[sources.gone]\npaths = [\"/nonexistent/cairn-test\"]\n\n[sources.files]",
        1,
    );
    std::fs::write(&s.config, cfg).expect("write");
    let d = Daemon::start(
        s.dir.path(),
        &s.config,
        &[(
            "SLACK_URL",
            &format!("http://{slack_addr}/services/T000/B000/XXXX"),
        )],
    );
    let (st, _) = http(
        &d.addr,
        "POST",
        "/api/v1/schedules/broken/run",
        None,
        Some(""),
    );
    assert_eq!(st, 202);
    let body = json_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the failure POST");
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v["event"], "run.failed");
    assert_eq!(v["run"]["state"], "FAILED");
    assert_eq!(v["run"]["job"], "backup-broken");
    assert!(
        v["run"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/nonexistent/cairn-test")),
        "{v:#}"
    );
    let slack: Value = serde_json::from_str(
        &slack_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("slack POST"),
    )
    .expect("json");
    let text = slack["text"].as_str().expect("slack text");
    assert!(
        text.contains("backup-broken") && text.contains("FAILED"),
        "{text}"
    );
    // The Slack URL is a secret: the log names its host only.
    assert!(!d.log().contains("XXXX"));
}
