//! The cost report for people: one self-contained HTML page with SVG
//! charts, and the charts themselves, which the daemon's dashboard shows
//! too. Axes carry round ticks ([`axis`]).

pub mod axis;

use cairn_engine::Report;
use chrono::Datelike;

use crate::axis::Unit;

/// Formats bytes with a binary unit, for people.
#[must_use]
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Dollars for people: cents, or four decimals below a cent.
pub fn usd(v: f64) -> String {
    if v < 0.01 && v > 0.0 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 8] = [
    "#3b6ea5", "#e07b39", "#4c9a5f", "#b84a62", "#8a6bb8", "#c9a227", "#3aa0a6", "#7a7a7a",
];

/// A line: label, colour, points (x, y).
type Series<'a> = (String, &'a str, Vec<(f64, f64)>);

/// A stacked bar: label, segments (name, colour, value).
type Bar<'a> = (String, Vec<(String, &'a str, f64)>);

/// The opening of a chart: its figure, caption and SVG element.
fn chart_start(title: &str, w: f64, h: f64) -> String {
    format!(
        "<figure><figcaption>{}</figcaption><svg role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\">",
        esc(title),
        esc(title)
    )
}

/// Horizontal grid lines at round values from 0 to the top tick, labelled,
/// across the plot from `left` to `width` - 20; `py` maps a value to its
/// SVG y.
fn y_grid(
    svg: &mut String,
    (left, width): (f64, f64),
    ticks: &[(f64, String)],
    py: impl Fn(f64) -> f64,
) {
    for (y, label) in ticks {
        let p = py(*y);
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{p:.1}\" y2=\"{p:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            width - 20.0,
            left - 6.0,
            p + 4.0,
            esc(label)
        ));
    }
}

/// A value in a chart's unit, exactly (for tooltips).
fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Bytes => human(v.max(0.0) as u64),
        Unit::Usd => usd(v),
    }
}

/// The round ticks for values up to `max` and the top one (the plot's
/// height).
fn axis(max: f64, unit: Unit) -> (Vec<(f64, String)>, f64) {
    let t = crate::axis::ticks(max, unit);
    let top = t.last().map_or(1.0, |x| x.0).max(1e-9);
    (t, top)
}

/// A line chart: each series is (label, color, points (x, y)).
fn line_chart(title: &str, x_label: &str, unit: Unit, series: &[Series<'_>]) -> String {
    let (w, h, l, b) = (720.0, 300.0, 80.0, 40.0);
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut xmax, mut ymax) = (0f64, 0f64);
    let mut xmin = f64::MAX;
    for (x, y) in pts {
        xmax = xmax.max(*x);
        xmin = xmin.min(*x);
        ymax = ymax.max(*y);
    }
    if xmin == f64::MAX {
        xmin = 0.0;
    }
    let xspan = (xmax - xmin).max(1e-9);
    let (ticks, ymax) = axis(ymax, unit);
    let sx = |x: f64| l + (x - xmin) / xspan * (w - l - 20.0);
    let sy = |y: f64| h - b - y / ymax * (h - b - 30.0);
    let mut svg = chart_start(title, w, h);
    y_grid(&mut svg, (l, w), &ticks, sy);
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\">{}</text>",
        (l + w) / 2.0,
        h - 8.0,
        esc(x_label)
    ));
    for (i, (label, color, points)) in series.iter().enumerate() {
        let d: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" points=\"{}\"/>",
            d.join(" ")
        ));
        for (x, y) in points {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{}: {}</title></circle>",
                sx(*x),
                sy(*y),
                esc(label),
                esc(&fmt_value(unit, *y))
            ));
        }
        let ly = 20.0 + 16.0 * i as f64;
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            l + 10.0,
            ly - 10.0,
            l + 28.0,
            ly,
            esc(label)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// A bar chart; bars are stacked from (label, color, value) segments.
fn bar_chart(title: &str, unit: Unit, bars: &[Bar<'_>]) -> String {
    let (w, h, l, b) = (720.0, 300.0, 80.0, 60.0);
    let (ticks, ymax) = axis(
        bars.iter()
            .map(|(_, segs)| segs.iter().map(|s| s.2).sum::<f64>())
            .fold(0.0, f64::max),
        unit,
    );
    let n = bars.len().max(1) as f64;
    let slot = (w - l - 20.0) / n;
    let bw = (slot * 0.7).max(2.0);
    let sy = |y: f64| y / ymax * (h - b - 20.0);
    let mut svg = chart_start(title, w, h);
    y_grid(&mut svg, (l, w), &ticks, |y| h - b - sy(y));
    let mut legend: Vec<(String, &str)> = Vec::new();
    // At most 16 labels, on every k-th bar, so they stay readable.
    let label_every = bars.len().div_ceil(16).max(1);
    for (i, (label, segs)) in bars.iter().enumerate() {
        let x = l + slot * i as f64 + (slot - bw) / 2.0;
        let mut base = h - b;
        for (name, color, v) in segs {
            let hgt = sy(*v);
            base -= hgt;
            svg.push_str(&format!(
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{base:.1}\" width=\"{bw:.1}\" height=\"{hgt:.1}\" fill=\"{color}\"><title>{}, {}: {}</title></rect>",
                esc(label),
                esc(name),
                esc(&fmt_value(unit, *v))
            ));
            if !legend.iter().any(|(n, _)| n == name) {
                legend.push((name.clone(), color));
            }
        }
        if i % label_every == 0 {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\" transform=\"rotate(-35 {:.1} {:.1})\">{}</text>",
                x + bw / 2.0,
                h - b + 14.0,
                x + bw / 2.0,
                h - b + 14.0,
                esc(label)
            ));
        }
    }
    for (i, (name, color)) in legend.iter().take(8).enumerate() {
        let ly = 20.0 + 16.0 * i as f64;
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"12\">{}</text>",
            w - 220.0,
            ly - 10.0,
            w - 202.0,
            esc(name)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The line chart of stored bytes after each backup against the logical
/// bytes the backups hold (the report's and the dashboard's).
#[must_use]
pub fn stored_chart(r: &Report) -> String {
    // Stored bytes over time: running sums over the backups.
    let running = |f: fn(&cairn_engine::BackupRow) -> u64| -> Vec<(f64, f64)> {
        let mut sum = 0u64;
        r.backups
            .iter()
            .enumerate()
            .map(|(i, b)| {
                sum += f(b);
                (i as f64 + 1.0, sum as f64)
            })
            .collect()
    };
    let stored = running(|b| b.new_stored_bytes);
    let logical_line = running(|b| b.logical_bytes);
    line_chart(
        "Stored bytes after each backup",
        "backup number",
        Unit::Bytes,
        &[
            (
                "logical (what the backups hold)".into(),
                COLORS[7],
                logical_line,
            ),
            ("stored by cairn".into(), COLORS[0], stored),
        ],
    )
}

/// The bar chart of the stored bytes each backup added, stacked by
/// collection or file, with time labels (the report's and the dashboard's).
#[must_use]
pub fn added_chart(r: &Report) -> String {
    // New bytes per backup, stacked by collection or file.
    let mut names: Vec<String> = Vec::new();
    for b in &r.backups {
        for a in &b.added {
            if !names.contains(&a.name) {
                names.push(a.name.clone());
            }
        }
    }
    // Bar labels: "Dec 2 14:30" when every backup is in one year.
    let one_year = r
        .backups
        .first()
        .is_some_and(|f| r.backups.iter().all(|b| b.time.year() == f.time.year()));
    let time_format = if one_year {
        "%b %-d %H:%M"
    } else {
        "%Y-%m-%d %H:%M"
    };
    let bars: Vec<Bar<'_>> = r
        .backups
        .iter()
        .map(|b| {
            let segs = b
                .added
                .iter()
                .map(|a| {
                    let i = names.iter().position(|n| n == &a.name).unwrap_or(0);
                    let name = if names.len() > 7 && i >= 7 {
                        "other".to_string()
                    } else {
                        a.name.clone()
                    };
                    (name, COLORS[i.min(7)], a.new_stored_bytes as f64)
                })
                .collect();
            (b.time.format(time_format).to_string(), segs)
        })
        .collect();
    bar_chart("New stored bytes per backup", Unit::Bytes, &bars)
}

/// The report as one self-contained HTML page: inline SVG charts, no
/// scripts, no fetches.
pub fn html(r: &Report, class: &str) -> String {
    let mut body = String::new();
    let t = &r.totals;
    body.push_str(&format!(
        "<h1>Cairn cost report</h1><p class=\"sub\">{} &middot; generated {} &middot; prices: {}</p>",
        esc(&r.repository),
        esc(&r.generated.to_rfc3339()),
        esc(class)
    ));
    let latest_cost = r
        .now
        .iter()
        .find(|c| c.class == class)
        .map_or(0.0, |c| c.total);
    let year = r.projection.last();
    let (cairn_y, full_y) = year
        .and_then(|p| p.cost.iter().find(|c| c.class == class))
        .map_or((0.0, 0.0), |c| (c.cairn, c.full_copies));
    body.push_str(&format!(
        "<div class=\"cards\"><div><b>{}</b>stored for {} logical in {} backups</div><div><b>{}</b>a month now ({})</div><div><b>{}</b>a month in a year, {}</div><div><b>{}</b>a month for full copies instead</div></div>",
        esc(&human(t.stored_bytes)),
        esc(&human(t.logical_bytes)),
        r.backups.len(),
        esc(&usd(latest_cost)),
        esc(class),
        esc(&usd(cairn_y)),
        esc(&r.policy),
        esc(&usd(full_y))
    ));

    body.push_str("<h2>Stored bytes over time</h2><p>What the repository holds after each backup, against what the backups hold: the gap is deduplication and compression.</p>");
    body.push_str(&stored_chart(r));
    body.push_str("<h2>What each backup added</h2><p>Stored bytes each backup added, by collection (cluster backups) or file. The first backup stores everything; later ones only what changed.</p>");
    body.push_str(&added_chart(r));

    // Cost per storage class now.
    let cost_bars: Vec<Bar<'_>> = r
        .now
        .iter()
        .map(|c| {
            (
                c.class.clone(),
                vec![
                    ("storage".to_string(), COLORS[0], c.storage),
                    ("requests".to_string(), COLORS[1], c.requests),
                    ("early deletion".to_string(), COLORS[3], c.early_deletion),
                ],
            )
        })
        .collect();
    body.push_str("<h2>Monthly cost per storage class</h2><p>What this repository costs a month in each class, at the built-in list prices (or your price file), with requests at the observed backup rate.</p>");
    body.push_str(&bar_chart(
        "Cost per month by storage class",
        Unit::Usd,
        &cost_bars,
    ));

    // Projection.
    let mut cairn = vec![(0.0, t.stored_bytes as f64)];
    let mut full = vec![(0.0, r.growth.latest_logical as f64 * r.backups.len() as f64)];
    let mut azure = vec![(0.0, full[0].1 / 2.0)];
    for p in &r.projection {
        cairn.push((f64::from(p.days), p.stored_bytes as f64));
        full.push((f64::from(p.days), p.full_copies_bytes as f64));
        azure.push((f64::from(p.days), p.cloud_azure_bytes as f64));
    }
    body.push_str(&format!(
        "<h2>Projection</h2><p>Stored bytes over the next year with {} and the observed growth ({} a day), against full copies of every kept backup and Qdrant Cloud's rule on Azure (half of each backup's size).</p>",
        esc(&r.policy),
        esc(&human(r.growth.per_day))
    ));
    body.push_str(&line_chart(
        "Stored bytes, days from now",
        "days from now",
        Unit::Bytes,
        &[
            ("full copies".into(), COLORS[3], full),
            ("Qdrant Cloud rule (Azure)".into(), COLORS[1], azure),
            ("cairn".into(), COLORS[0], cairn),
        ],
    ));

    // Tables.
    body.push_str("<h2>Backups</h2><table><tr><th>time</th><th>id</th><th>source</th><th>logical</th><th>added</th><th>stored</th><th>dedup</th><th>PUTs</th><th>drill</th></tr>");
    for b in &r.backups {
        body.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            esc(&b.id[..8]),
            esc(&b.source),
            esc(&human(b.logical_bytes)),
            esc(&human(b.new_bytes)),
            esc(&human(b.new_stored_bytes)),
            times(b.dedup_ratio, b.new_bytes, 1),
            b.requests.puts,
            esc(&b.drill.as_ref().map_or(String::new(), |d| format!(
                "{} {} ({}/{} probes)",
                if d.passed { "passed" } else { "FAILED" },
                d.time.format("%Y-%m-%d %H:%M"),
                d.probes_matched,
                d.probes
            )))
        ));
    }
    body.push_str("</table><h2>Storage classes</h2><table><tr><th>class</th><th>storage</th><th>requests</th><th>early deletion</th><th>per month</th><th>prices as of</th></tr>");
    for c in &r.now {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td></tr>",
            esc(&c.name),
            esc(&usd(c.storage)),
            esc(&usd(c.requests)),
            esc(&usd(c.early_deletion)),
            esc(&usd(c.total)),
            esc(&c.as_of)
        ));
    }
    body.push_str("</table>");
    if let Some(rs) = &r.restore {
        body.push_str(&format!(
            "<h2>Restoring the latest backup</h2><p>{} read in {} GET requests: about {:.0} s at {}/s and {:.0} ms a request. Egress and retrieval, per class: {}.</p>",
            esc(&human(rs.bytes)),
            rs.gets,
            rs.seconds,
            esc(&human(rs.bandwidth)),
            rs.latency * 1000.0,
            esc(&rs
                .cost
                .iter()
                .map(|c| format!("{} {}", c.class, usd(c.cost)))
                .collect::<Vec<_>>()
                .join(", "))
        ));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Cairn cost report</title><style>\
body{{font-family:system-ui,sans-serif;max-width:780px;margin:2em auto;color:#222;padding:0 1em}}\
h1{{margin-bottom:0}}.sub{{color:#666;margin-top:.3em}}\
.cards{{display:flex;gap:12px;flex-wrap:wrap;margin:1.5em 0}}.cards div{{flex:1 1 160px;background:#f3f6fa;border-radius:8px;padding:12px}}\
.cards b{{display:block;font-size:1.5em;color:#3b6ea5}}\
figure{{margin:0 0 1.5em}}figcaption{{font-weight:600;margin-bottom:4px}}svg{{max-width:100%;height:auto;background:#fff}}\
table{{border-collapse:collapse;width:100%;font-size:.9em}}td,th{{border-bottom:1px solid #e4e4e4;padding:4px 6px;text-align:right}}\
td:first-child,th:first-child{{text-align:left}}\
</style></head><body>{body}</body></html>\n"
    )
}

/// A ratio as "12.3x", or "—" for a backup that added nothing (every byte
/// reused: there is no ratio to speak of).
pub fn times(ratio: f64, added: u64, decimals: usize) -> String {
    if added == 0 {
        "—".to_string()
    } else {
        format!("{ratio:.decimals$}x")
    }
}
