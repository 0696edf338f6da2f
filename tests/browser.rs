//! A headless Chromium driven over the DevTools protocol (a WebSocket,
//! tungstenite): the dashboard's browser test and its first-paint
//! benchmark share it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The body of a plain HTTP GET (DevTools' own JSON endpoints), read up
/// to its Content-Length (the server may keep the connection open).
fn get(hostport: &str, path: &str) -> String {
    let mut s = TcpStream::connect(hostport).expect("connect devtools");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).expect("read devtools");
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&resp);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.to_ascii_lowercase().lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&resp).into_owned();
    text.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

/// A headless Chromium and a DevTools connection to its page.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium headless on a blank page and connects to it.
    pub fn start() -> Self {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the dashboard test needs Chromium: run scripts/test.sh (it installs it) or apt-get install chromium");
        let profile = tempfile::TempDir::new().expect("profile");
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1366,900",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromium exited before it listened")
                .expect("read");
            if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                let hostport = rest.split('/').next().expect("host:port");
                break hostport.to_string();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let targets: Value = serde_json::from_str(&get(&port, "/json/list")).expect("targets");
        let page = targets
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().expect("ws url");
        let path = url.splitn(4, '/').nth(3).expect("path");
        let stream = TcpStream::connect(&port).expect("connect devtools");
        let (ws, _) =
            tungstenite::client(format!("ws://{port}/{path}"), stream).expect("websocket");
        let mut b = Self {
            child,
            ws,
            id: 0,
            _profile: profile,
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Calls a DevTools method and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let id = self.id;
        self.ws
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .expect("send");
        loop {
            let msg = self.ws.read().expect("read devtools");
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["method"] == "Runtime.exceptionThrown" {
                panic!("page error: {v:#}");
            }
            if v["method"] == "Runtime.consoleAPICalled" && v["params"]["type"] == "error" {
                panic!("console error: {v:#}");
            }
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v:#}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r:#}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy.
    pub fn wait(&mut self, what: &str, expr: &str, limit: Duration) {
        let t = Instant::now();
        // Right after a navigation the old document may still answer: an
        // expression that throws there counts as "not yet".
        let guarded =
            format!("(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()");
        loop {
            let v = self.eval(&guarded);
            if v.as_bool() == Some(true) {
                return;
            }
            if t.elapsed() > limit {
                let text = self.eval("document.body.innerText");
                panic!(
                    "timed out waiting for {what}; the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a screenshot and checks it shows something.
    pub fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("data"))
            .expect("base64");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("save screenshot");
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("png");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("frame");
        let px = info.color_type.samples();
        let pixels = &buf[..info.buffer_size()];
        let inked = pixels
            .chunks(px)
            .filter(|p| p[..3].iter().any(|&c| c < 200))
            .count();
        let total = pixels.len() / px;
        assert!(
            inked * 200 > total,
            "{} is blank ({inked} of {total} pixels inked)",
            path.display()
        );
        eprintln!("screenshot {}", path.display());
        path
    }
}
