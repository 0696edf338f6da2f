use std::path::Path;
use std::process::Command;

use crate::support::{files_under, shared_fixtures, Env};

/// The churn series backed up day by day.
fn churn_repo(test: &str) -> Option<Env> {
    let shared = shared_fixtures(test)?;
    let env = Env::local();
    env.init(&[]);
    for day in 0..6 {
        let f = shared.join(format!("qdrant-churn/day{day}/collection-node0.snapshot"));
        env.backup(&[&f]);
    }
    Some(env)
}

#[test]
fn report_totals_match_the_store_and_the_backups() {
    let Some(env) = churn_repo("report_totals_match_the_store_and_the_backups") else {
        return;
    };
    let r = env.json(&[
        "report",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "12",
    ]);
    let t = &r["totals"];
    let listed: u64 = files_under(Path::new(&env.repo))
        .iter()
        .map(|f| {
            std::fs::metadata(Path::new(&env.repo).join(f))
                .expect("meta")
                .len()
        })
        .sum();
    assert_eq!(t["stored_bytes"], listed, "the store's object sizes");
    let added: u64 = r["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["new_stored_bytes"].as_u64().expect("n"))
        .sum();
    let metadata = t["metadata_bytes"].as_u64().expect("n");
    assert_eq!(added + metadata, listed);
    assert_eq!(r["sources"].as_array().expect("sources").len(), 1);
    assert_eq!(r["sources"][0]["added_stored_bytes"], added);
    // docs/cost.md: metadata (pack headers and trailers, index files,
    // manifests, config) stays under 2 % of the stored bytes (0.34 % here).
    assert!(
        (metadata as f64) < 0.02 * listed as f64,
        "{metadata} of {listed}"
    );
    // Every backup's per-file figures sum to its totals.
    for b in r["backups"].as_array().expect("backups") {
        let per_file: u64 = b["added"]
            .as_array()
            .expect("added")
            .iter()
            .map(|a| a["new_stored_bytes"].as_u64().expect("n"))
            .sum();
        assert_eq!(per_file, b["new_stored_bytes"], "{b}");
    }
    // Storage cost by hand: stored GiB x $0.023 on S3 Standard.
    let s3 = r["now"]
        .as_array()
        .expect("now")
        .iter()
        .find(|c| c["class"] == "s3-standard")
        .expect("s3-standard");
    let by_hand = listed as f64 / 1_073_741_824.0 * 0.023;
    assert!(
        (s3["storage"].as_f64().expect("f") - by_hand).abs() < 1e-12,
        "{s3}"
    );
    // Requests by hand, a night for 30 nights: PUT-class are the PUTs and
    // LISTs (6 + 4) at $0.005 per 1,000, GET-class the GETs and HEADs
    // (0 + 1) at $0.0004 per 1,000.
    let q = &r["backups"][1]["requests"];
    let n = |k: &str| q[k].as_u64().expect("count") as f64;
    assert_eq!(
        (n("puts"), n("lists"), n("gets"), n("heads")),
        (6.0, 4.0, 0.0, 1.0),
        "{q}"
    );
    let req = (6.0 + 4.0) * 30.0 / 1000.0 * 0.005 + 1.0 * 30.0 / 1000.0 * 0.0004;
    assert!(
        (s3["requests"].as_f64().expect("f") - req).abs() < 1e-12,
        "{s3}"
    );
    // The six backups were made minutes apart: daily 7 keeps the newest of
    // the day, so the other five expire, and what only they need is counted.
    assert!(r["expiring"]["snapshots"].as_u64().expect("n") >= 1);
    assert!(r["expiring"]["bytes"].as_u64().expect("n") > 0);
    // The projection grows and stays below full copies after a year.
    let p = r["projection"].as_array().expect("projection");
    assert_eq!(p.len(), 3);
    let year = &p[2];
    assert!(
        year["stored_bytes"].as_u64() < year["full_copies_bytes"].as_u64(),
        "{year}"
    );
    assert_eq!(
        year["cloud_azure_bytes"].as_u64().expect("n") * 2,
        year["full_copies_bytes"].as_u64().expect("n") & !1
    );
    let restore = &r["restore"];
    assert!(
        restore["bytes"].as_u64().expect("n") > 10 << 20,
        "{restore}"
    );
    assert!(restore["gets"].as_u64().expect("n") > 0);
}

#[test]
fn report_prices_can_be_overridden_and_exported_as_csv() {
    let Some(env) = churn_repo("report_prices_can_be_overridden_and_exported_as_csv") else {
        return;
    };
    let prices = env.path("prices.toml");
    std::fs::write(
        &prices,
        "[classes.s3-standard]\nstorage-gb-month = 1.0\n\n[classes.tape]\nname = \"Tape\"\nstorage-gb-month = 0.001\nput-per-1000 = 0.0\nget-per-1000 = 0.0\negress-per-gb = 0.0\n",
    )
    .expect("write");
    let r = env.json(&["report", "--prices", prices.to_str().expect("utf8")]);
    let now = r["now"].as_array().expect("now");
    let stored = r["totals"]["stored_bytes"].as_f64().expect("f");
    let s3 = now
        .iter()
        .find(|c| c["class"] == "s3-standard")
        .expect("s3");
    assert!((s3["storage"].as_f64().expect("f") - stored / 1_073_741_824.0).abs() < 1e-12);
    assert!(now
        .iter()
        .any(|c| c["class"] == "tape" && c["as_of"] == "override"));
    let (code, err) = env.fail(&["report", "--class", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no storage class"), "{err}");

    let out = env.run(&["report", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "header and six backups: {csv}");
    assert!(lines[0].starts_with("id,time,source,logical_bytes,new_bytes,new_stored_bytes"));
}

/// The HTML report in a real headless browser: it loads with no console
/// error and no failed request, and the screenshot shows the charts drawn.
#[test]
fn html_report_renders_in_a_real_browser() {
    let Some(env) = churn_repo("html_report_renders_in_a_real_browser") else {
        return;
    };
    let html = env.path("report.html");
    env.run(&[
        "report",
        "--keep-daily",
        "7",
        "--html",
        html.to_str().expect("utf8"),
    ]);
    let page = std::fs::read_to_string(&html).expect("html");
    assert_eq!(page.matches("<svg").count(), 4, "four charts");
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"));
    // Each chart's axis: round values from zero, no label twice.
    for figure in page.split("<figure>").skip(1) {
        let labels: Vec<&str> = figure
            .split("text-anchor=\"end\" font-size=\"11\">")
            .skip(1)
            .map(|t| t.split("</text>").next().expect("label"))
            .collect();
        assert!(labels.len() >= 2, "{figure}");
        assert!(labels[0] == "0" || labels[0] == "$0", "{labels:?}");
        let distinct: std::collections::HashSet<&&str> = labels.iter().collect();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
        for l in &labels[1..] {
            // At most three significant digits: 0.5 GiB, 250 MiB, $0.015.
            let digits = l.chars().filter(char::is_ascii_digit).collect::<String>();
            assert!(
                digits.trim_start_matches('0').len() <= 3,
                "{l} in {labels:?}"
            );
        }
    }

    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the HTML test needs Chromium: run scripts/test.sh (it installs it) or apt-get install chromium");
    let shot = env.path("shot.png");
    let profile = env.path("chrome-profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--log-level=0",
            "--window-size=900,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Failed to load resource"))
        .collect();
    assert!(console.is_empty(), "console output: {console:?}");

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("png");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("frame");
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    // The charts' blue (#3b6ea5) and orange (#e07b39) must be on screen.
    let count = |rgb: [u8; 3]| {
        pixels
            .chunks(px)
            .filter(|p| p[..3].iter().zip(rgb).all(|(a, b)| a.abs_diff(b) < 8))
            .count()
    };
    let (blue, orange) = (count([0x3b, 0x6e, 0xa5]), count([0xe0, 0x7b, 0x39]));
    assert!(
        blue > 2000 && orange > 500,
        "chart colours on screen: blue {blue}, orange {orange}"
    );
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks(px).collect();
    assert!(distinct.len() > 50, "not blank: {} colours", distinct.len());
}
