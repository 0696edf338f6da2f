//! The dashboard in headless Chromium, driven over the DevTools protocol,
//! against a real daemon and live Qdrant nodes: sign in with the token,
//! create a schedule, press "Backup now", see it SUCCEEDED, restore one
//! collection under a new name into a fresh node (confirming what it
//! writes), check it, delete the backup. Screenshots are saved and checked
//! non-blank.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::daemon::{http, Daemon};
use crate::qdrant_server::{create, fingerprint, upsert, Qdrant};

const DIM: usize = 16;

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

#[test]
fn the_dashboard_backs_up_restores_and_deletes_in_a_real_browser() {
    let test = "the_dashboard_backs_up_restores_and_deletes_in_a_real_browser";
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(src) = Qdrant::start(test, 1, None) else {
        return;
    };
    let dst = Qdrant::start(test, 1, None).expect("binary present");
    let url = &src.urls[0];
    create(
        url,
        None,
        "docs",
        json!({ "vectors": { "size": DIM, "distance": "Cosine" }, "shard_number": 2 }),
    );
    upsert(url, None, "docs", 0..800, DIM, 5, None);
    let original = fingerprint(url, None, "docs", DIM, None);

    let dir = tempfile::TempDir::new().expect("tempdir");
    let repo = dir.path().join("repo");
    let out = Command::new(crate::support::cairn_bin())
        .arg("--repo")
        .arg(&repo)
        .args(["init", "--quiet"])
        .args(crate::support::CHEAP_KDF)
        .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
        .env("CAIRN_CACHE_DIR", dir.path().join("cache-init"))
        .output()
        .expect("init");
    assert!(out.status.success());
    let config = dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "# The demo cluster.\n[repositories.main]\nlocation = {:?}\n\n[sources.cluster]\nqdrant = [{url:?}]\n",
            repo.display().to_string()
        ),
    )
    .expect("config");
    let token = "dash-token-5e1b2c";
    let d = Daemon::start(dir.path(), &config, &[("CAIRN_API_TOKEN", token)]);

    let mut b = Browser::start();
    b.call(
        "Page.navigate",
        json!({ "url": format!("http://{}/", d.addr) }),
    );
    b.wait(
        "the sign-in form",
        "!document.getElementById('login').hidden",
        Duration::from_secs(20),
    );
    b.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('login').requestSubmit(); true",
        js(token)
    ));
    b.wait(
        "the app",
        "!document.getElementById('app').hidden",
        Duration::from_secs(20),
    );

    // Create a schedule with the form.
    b.eval("document.getElementById('new-schedule').click(); true");
    b.wait("the schedule dialog", "document.getElementById('schedule-dialog').open && document.getElementById('sd-source').options.length > 0", Duration::from_secs(10));
    b.eval(
        "document.getElementById('sd-name').value = 'nightly';\
         document.getElementById('sd-source').value = 'cluster';\
         document.getElementById('sd-freq').value = '@daily';\
         document.getElementById('sd-days').value = '7';\
         document.getElementById('sd-save').click(); true",
    );
    b.wait(
        "the new schedule's row",
        "!!document.querySelector('[data-schedule=\"nightly\"]')",
        Duration::from_secs(20),
    );
    let cfg = std::fs::read_to_string(&config).expect("config");
    assert!(
        cfg.contains("[schedules.nightly]") && cfg.contains("days = 7"),
        "{cfg}"
    );
    assert!(
        cfg.starts_with("# The demo cluster."),
        "the edit kept the file's comments: {cfg}"
    );

    // Backup now, and see it succeed.
    b.eval("document.querySelector('[data-schedule=\"nightly\"] [data-action=\"backup-now\"]').click(); true");
    b.wait(
        "a SUCCEEDED run and a backup row",
        "document.querySelectorAll('#backups tr').length === 1 && [...document.querySelectorAll('#runs .state')].some(e => e.textContent === 'SUCCEEDED') && document.querySelector('[data-schedule=\"nightly\"]').innerText.includes('SUCCEEDED')",
        Duration::from_secs(120),
    );
    let row = b.eval("document.querySelector('#backups tr').innerText");
    assert!(
        row.as_str()
            .is_some_and(|t| t.contains("docs (800 points)") && t.contains("nightly")),
        "{row}"
    );
    // The cost chart: one bar, round axis ticks.
    b.wait(
        "the cost chart",
        "document.querySelectorAll('#cost svg rect.bar').length === 1",
        Duration::from_secs(30),
    );
    let ticks = b.eval("[...document.querySelectorAll('#cost svg text')].map(t => t.textContent).filter(t => /^[0-9.]+ (B|KiB|MiB|GiB)$/.test(t))");
    let ticks: Vec<&str> = ticks
        .as_array()
        .expect("ticks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ticks.len() >= 2, "{ticks:?}");
    for t in &ticks {
        let n = t.split(' ').next().expect("number");
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        assert!(
            digits.trim_start_matches('0').trim_end_matches('0').len() <= 2,
            "tick {t} is not round: {ticks:?}"
        );
    }
    b.screenshot(shots, "dashboard-1-backed-up");

    // Restore the collection under a new name into a fresh node.
    b.eval("document.querySelector('#backups [data-action=\"restore\"]').click(); true");
    b.wait(
        "the restore dialog",
        "document.getElementById('restore-dialog').open",
        Duration::from_secs(10),
    );
    b.eval(&format!(
        "document.getElementById('rd-target').value = {};\
         document.querySelector('[data-rename=\"docs\"]').value = 'docs_restored';\
         document.getElementById('rd-go').click(); true",
        js(&dst.urls[0])
    ));
    let confirm = b.eval("document.getElementById('rd-confirm').textContent");
    let confirm = confirm.as_str().unwrap_or("");
    assert!(
        confirm.contains("docs_restored") && confirm.contains(&dst.urls[0]),
        "the confirmation names what it writes: {confirm}"
    );
    b.screenshot(shots, "dashboard-2-confirm-restore");
    b.eval("document.getElementById('rd-go').click(); true");
    b.wait(
        "the restore to finish",
        "[...document.querySelectorAll('#restores .state')].some(e => e.textContent !== 'RUNNING')",
        Duration::from_secs(180),
    );
    let state = b.eval("document.querySelector('#restores tr').innerText");
    assert!(
        state.as_str().is_some_and(|t| t.contains("SUCCEEDED")),
        "{state}"
    );
    assert_eq!(
        fingerprint(&dst.urls[0], None, "docs_restored", DIM, None),
        original
    );
    b.screenshot(shots, "dashboard-3-restored");

    // Delete the backup, through its confirmation.
    b.eval("document.querySelector('#backups [data-action=\"delete\"]').click(); true");
    b.wait(
        "the confirmation",
        "document.getElementById('confirm-dialog').open",
        Duration::from_secs(10),
    );
    let text = b.eval("document.getElementById('cd-text').textContent");
    assert!(text.as_str().is_some_and(|t| t.contains("docs")), "{text}");
    b.eval("document.getElementById('cd-yes').click(); true");
    b.wait(
        "the backup gone",
        "document.querySelectorAll('#backups tr').length === 0",
        Duration::from_secs(20),
    );
    b.screenshot(shots, "dashboard-4-deleted");
    let (st, body) = http(&d.addr, "GET", "/api/v1/backups", Some(token), None);
    assert_eq!((st, body.as_str()), (200, "[]"));
}
