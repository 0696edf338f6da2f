//! The dashboard's first paint in headless Chromium, signed in: for each of
//! N page loads, the first contentful paint and the moment the backups
//! table is filled (the page's `cairn:backups` mark), from navigation
//! start. Prints tab-separated "what<TAB>value" lines (medians) for
//! benches/daemon.sh.
//!
//! Usage: dashboard-paint URL TOKEN N [EXPECTED_BACKUPS]

#[allow(dead_code)]
#[path = "../tests/browser.rs"]
mod browser;

use std::time::Duration;

use serde_json::{json, Value};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(token), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: dashboard-paint URL TOKEN N [EXPECTED_BACKUPS]");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let mut b = browser::Browser::start();
    b.call("Page.navigate", json!({ "url": url }));
    b.wait(
        "the sign-in form",
        "document.getElementById('token') !== null",
        Duration::from_secs(60),
    );
    b.eval(&format!(
        "sessionStorage.setItem('cairn-token', {}); true",
        serde_json::to_string(token).expect("json")
    ));
    let (mut fcp, mut filled) = (Vec::new(), Vec::new());
    let mut shown = Value::Null;
    for _ in 0..n {
        // The old document's marks go, so only the new one can answer.
        b.eval("performance.clearMarks(); true");
        b.call("Page.navigate", json!({ "url": url }));
        b.wait(
            "the backups table",
            "performance.getEntriesByName('cairn:backups').length > 0 && performance.getEntriesByName('first-contentful-paint').length > 0",
            Duration::from_secs(120),
        );
        let v = b.eval(
            "[performance.getEntriesByName('first-contentful-paint')[0].startTime, performance.getEntriesByName('cairn:backups')[0].startTime, document.querySelectorAll('#backups tr').length, document.getElementById('backups-count').textContent]",
        );
        fcp.push(v[0].as_f64().expect("paint time"));
        filled.push(v[1].as_f64().expect("mark time"));
        shown = v;
    }
    if let Some(expected) = args.get(4) {
        let total = shown[3].as_str().unwrap_or("");
        assert!(
            total.replace(',', "").contains(expected.as_str()),
            "the dashboard says {total:?}, not {expected} backups"
        );
    }
    println!(
        "dashboard first contentful paint, median (ms)\t{:.0}",
        median(fcp)
    );
    println!(
        "dashboard backups table filled, median (ms)\t{:.0}",
        median(filled)
    );
    println!(
        "dashboard rows shown / total\t{} / {}",
        shown[2],
        shown[3].as_str().unwrap_or("")
    );
}
