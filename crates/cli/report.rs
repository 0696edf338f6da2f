//! `cairn report`: the cost report as tables, JSON, CSV or one HTML file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_engine::{PriceTable, Report, ReportOptions};
use cairn_report::{html, times, usd};

use crate::global::GlobalArgs;
use crate::size::{human, parse_size};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    policy: crate::policy::PolicyArgs,
    /// A TOML file overriding prices or adding storage classes (docs/cost.md).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Backups per day for the projection (default: as observed, else 1).
    #[arg(long, value_name = "N")]
    backups_per_day: Option<f64>,
    /// Bandwidth for the restore estimate, per second (default 125MB: 1 Gbit/s).
    #[arg(long, value_name = "RATE", value_parser = parse_size, default_value = "125000000")]
    bandwidth: u64,
    /// Round trip of one request for the restore estimate, in milliseconds
    /// (first-byte latency of the object store; 0 for local disk).
    #[arg(long, value_name = "MS", default_value_t = 20.0)]
    latency_ms: f64,
    /// Only snapshots of this source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// The storage class the tables detail (default s3-standard).
    #[arg(long, value_name = "CLASS", default_value = "s3-standard")]
    class: String,
    /// Print the backups as CSV instead of tables.
    #[arg(long, conflicts_with = "html")]
    csv: bool,
    /// Also write the report as one self-contained HTML file with charts.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub async fn report(g: &GlobalArgs, a: ReportArgs) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let mut prices = PriceTable::builtin();
    if let Some(p) = &a.prices {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the price file {}", p.display()))?;
        prices = prices
            .with_overrides(&text)
            .map_err(|e| cairn_engine::Error::InvalidArgument(e.to_string()))?;
    }
    if !prices.classes.contains_key(&a.class) {
        anyhow::bail!(cairn_engine::Error::InvalidArgument(format!(
            "no storage class {:?}; known: {}",
            a.class,
            prices
                .classes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let opts = ReportOptions {
        prices,
        policy: a.policy.policy(),
        backups_per_day: a.backups_per_day,
        bandwidth: a.bandwidth,
        latency: a.latency_ms / 1000.0,
        source: a.source.clone(),
    };
    let r = repo.report(&opts).await?;
    if let Some(path) = &a.html {
        std::fs::write(path, html(&r, &a.class))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if g.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if a.csv {
        print!("{}", csv(&r));
    } else {
        print_tables(&r, &a.class);
        if let Some(path) = &a.html {
            println!("HTML report written to {}", path.display());
        }
    }
    Ok(())
}

/// One row per backup.
pub fn csv(r: &Report) -> String {
    let mut out = String::from(
        "id,time,source,logical_bytes,new_bytes,new_stored_bytes,dedup_ratio,compression_ratio,puts,gets,lists,heads,deletes\n",
    );
    for b in &r.backups {
        let q = &b.requests;
        out.push_str(&format!(
            "{},{},\"{}\",{},{},{},{:.3},{:.3},{},{},{},{},{}\n",
            b.id,
            crate::size::time(&b.time),
            b.source.replace('"', "\"\""),
            b.logical_bytes,
            b.new_bytes,
            b.new_stored_bytes,
            b.dedup_ratio,
            b.compression_ratio,
            q.puts,
            q.gets,
            q.lists,
            q.heads,
            q.deletes
        ));
    }
    out
}

fn print_tables(r: &Report, class: &str) {
    let t = &r.totals;
    if r.backups.is_empty() {
        println!(
            "repository {}: no backups yet ({} stored)",
            r.repository,
            human(t.stored_bytes)
        );
        return;
    }
    println!(
        "repository {}: {} backups, {} logical, {} stored",
        r.repository,
        r.backups.len(),
        human(t.logical_bytes),
        human(t.stored_bytes)
    );
    for (kind, o) in &t.objects {
        if o.count > 0 {
            println!("  {kind:<10} {:>6} objects {:>12}", o.count, human(o.bytes));
        }
    }
    println!(
        "  added by backups {}, metadata {} ({:.2} %)",
        human(t.added_bytes),
        human(t.metadata_bytes),
        100.0 * t.metadata_bytes as f64 / t.stored_bytes.max(1) as f64
    );
    println!();
    println!(
        "{:<27} {:<10} {:>11} {:>11} {:>11} {:>7} {:>7} {:>6}  SOURCE",
        "TIME", "ID", "LOGICAL", "ADDED", "STORED", "DEDUP", "COMPR", "PUTS"
    );
    for b in &r.backups {
        println!(
            "{:<27} {:<10} {:>11} {:>11} {:>11} {:>7} {:>7} {:>6}  {}",
            crate::size::time(&b.time),
            &b.id[..8],
            human(b.logical_bytes),
            human(b.new_bytes),
            human(b.new_stored_bytes),
            times(b.dedup_ratio, b.new_bytes, 1),
            times(b.compression_ratio, b.new_stored_bytes, 2),
            b.requests.puts,
            b.source
        );
        if let Some(d) = &b.drill {
            println!("{:<27} {:<10} {}", "", "", crate::drill::line(d));
        }
        if b.added.len() > 1 || b.added.iter().any(|a| !a.shards.is_empty()) {
            for a in &b.added {
                println!(
                    "{:<27} {:<10} {:>11} {:>11} {:>11}  {}",
                    "",
                    "",
                    "",
                    human(a.new_bytes),
                    human(a.new_stored_bytes),
                    a.name
                );
            }
        }
    }
    if r.sources.len() > 1 {
        println!();
        println!("{:<6} {:>11} {:>11}  SOURCE", "BACKUPS", "LATEST", "ADDED");
        for src in &r.sources {
            println!(
                "{:<6} {:>11} {:>11}  {}",
                src.backups,
                human(src.latest_logical_bytes),
                human(src.added_stored_bytes),
                src.source
            );
        }
    }
    println!();
    let gr = &r.growth;
    println!(
        "growth: {} stored per backup (median after the first), {:.2} backups a day: {} a day",
        human(gr.per_backup),
        gr.backups_per_day,
        human(gr.per_day)
    );
    match &r.expiring {
        Some(e) => println!(
            "policy {}: {} snapshot(s) expire; the next prune frees {}",
            r.policy,
            e.snapshots,
            human(e.bytes)
        ),
        None => println!("policy: {} (give --keep-* to see what expires)", r.policy),
    }
    println!();
    println!(
        "{:<18} {:<30} {:>10} {:>10} {:>10} {:>10}  PRICES AS OF",
        "CLASS", "", "STORAGE", "REQUESTS", "EARLY DEL", "PER MONTH"
    );
    for c in &r.now {
        println!(
            "{:<18} {:<30} {:>10} {:>10} {:>10} {:>10}  {}",
            c.class,
            c.name,
            usd(c.storage),
            usd(c.requests),
            usd(c.early_deletion),
            usd(c.total),
            c.as_of
        );
    }
    println!();
    println!("projection, {} ({class}, per month):", r.policy);
    println!(
        "{:>6} {:>6} {:>12} {:>12} {:>14} {:>14} {:>12}",
        "DAYS", "KEPT", "CAIRN", "$ CAIRN", "FULL COPIES", "$ FULL", "$ AZURE RULE"
    );
    for p in &r.projection {
        let (cairn, full, azure) = p
            .cost
            .iter()
            .find(|c| c.class == class)
            .map_or((0.0, 0.0, 0.0), |c| (c.cairn, c.full_copies, c.cloud_azure));
        println!(
            "{:>6} {:>6} {:>12} {:>12} {:>14} {:>14} {:>12}",
            p.days,
            p.kept,
            human(p.stored_bytes),
            usd(cairn),
            human(p.full_copies_bytes),
            usd(full),
            usd(azure)
        );
    }
    if let Some(x) = r.projection.last() {
        if let Some(cairn_engine::ClassProjection {
            cairn,
            full_copies: full,
            ..
        }) = x.cost.iter().find(|c| c.class == class)
        {
            if *full > 0.0 {
                let verdict = if cairn <= full {
                    format!("saves {} a month", usd(full - cairn))
                } else {
                    format!("costs {} a month more", usd(cairn - full))
                };
                println!(
                    "after {} days cairn costs {:.1} % of full copies: {verdict}",
                    x.days,
                    100.0 * cairn / full
                );
            }
        }
    }
    if let Some(rs) = &r.restore {
        println!();
        println!(
            "restore of the latest backup ({}): read {} in {} GETs ({} a request, {} over-read), {:.1} s at {}/s and {:.0} ms a request, {} at once",
            &rs.snapshot[..8.min(rs.snapshot.len())],
            human(rs.bytes),
            rs.gets,
            human(rs.bytes / rs.gets.max(1)),
            human(rs.over_read),
            rs.seconds,
            human(rs.bandwidth),
            rs.latency * 1000.0,
            rs.concurrency
        );
        for p in &rs.parts {
            println!("  {}: {} in {} GETs", p.name, human(p.bytes), p.gets);
        }
        let costs: Vec<String> = rs
            .cost
            .iter()
            .map(|c| format!("{} {}", c.class, usd(c.cost)))
            .collect();
        println!("  cost: {}", costs.join(", "));
    }
}
