//! `cairn config check` and `cairn config init`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::global::{exit, GlobalArgs, Reported};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: every problem, with its line.
    Check {
        /// The config file.
        file: PathBuf,
    },
    /// Write a commented starter config (repository from --repo, one schedule named `daily` keeping 7 days).
    Init {
        /// URLs of the Qdrant cluster's nodes (comma-separated or repeated).
        #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
        qdrant: Vec<String>,
        /// Write here instead of to stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Overwrite --out if it exists.
        #[arg(long)]
        force: bool,
    },
}

pub fn config(g: &GlobalArgs, cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Check { file } => check(g, &file),
        ConfigCommand::Init { qdrant, out, force } => init(g, &qdrant, out.as_deref(), force),
    }
}

fn problem_json(p: &cairn_config::Problem) -> serde_json::Value {
    serde_json::json!({ "line": p.line, "key": p.key, "message": p.message })
}

/// `FILE:LINE: key: message`, as compilers print, so editors can jump to it.
fn located(file: &Path, p: &cairn_config::Problem) -> String {
    match p.line {
        Some(l) => format!(
            "{}:{l}: {}",
            file.display(),
            cairn_config::Problem {
                line: None,
                ..p.clone()
            }
        ),
        None => format!("{}: {p}", file.display()),
    }
}

fn check(g: &GlobalArgs, file: &Path) -> Result<()> {
    let loaded = match cairn_config::load(file) {
        Ok(l) => l,
        Err(cairn_config::LoadError::Invalid { problems, .. }) => {
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "valid": false,
                        "problems": problems.iter().map(problem_json).collect::<Vec<_>>(),
                    })
                );
            }
            for p in &problems {
                eprintln!("{}", located(file, p));
            }
            eprintln!(
                "cairn: {} is not valid: {} problem(s)",
                file.display(),
                problems.len()
            );
            return Err(Reported(exit::FAILURE).into());
        }
        Err(e) => return Err(e.into()),
    };
    let c = &loaded.config;
    let now = chrono::Utc::now();
    let schedules: Vec<serde_json::Value> = c
        .schedules
        .iter()
        .map(|(name, s)| {
            let when = c.when(name);
            let next = when.as_ref().and_then(|w| w.next_after(now));
            serde_json::json!({
                "name": name,
                "source": s.source.get_ref(),
                "repository": c.repository_of(name).map(|(n, _)| n),
                "cron": s.cron.get_ref(),
                "timezone": when.as_ref().map(|w| w.timezone().name()),
                "enabled": s.enabled,
                "next_run": next.map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "valid": true,
                "repositories": c.repositories.keys().collect::<Vec<_>>(),
                "sources": c.sources.keys().collect::<Vec<_>>(),
                "schedules": schedules,
                "prune": c.prune.as_ref().map(|p| p.cron.get_ref()),
                "check": c.check.as_ref().map(|k| k.cron.get_ref()),
                "drill": c.drill.as_ref().map(|d| d.cron.get_ref()),
                "webhooks": c.webhooks.len(),
                "warnings": loaded.warnings.iter().map(problem_json).collect::<Vec<_>>(),
            })
        );
    } else {
        for w in &loaded.warnings {
            eprintln!("warning: {}", located(file, w));
        }
        println!(
            "{}: valid: {} repositor{}, {} source(s), {} schedule(s){}{}{}",
            file.display(),
            c.repositories.len(),
            if c.repositories.len() == 1 {
                "y"
            } else {
                "ies"
            },
            c.sources.len(),
            c.schedules.len(),
            if c.prune.is_some() { ", prune" } else { "" },
            if c.check.is_some() { ", check" } else { "" },
            if c.drill.is_some() { ", drill" } else { "" },
        );
        for s in &schedules {
            println!(
                "  schedule {}: {} ({}), {} -> {}{}, next run {}",
                s["name"].as_str().unwrap_or_default(),
                s["cron"].as_str().unwrap_or_default(),
                s["timezone"].as_str().unwrap_or("?"),
                s["source"].as_str().unwrap_or_default(),
                s["repository"].as_str().unwrap_or("?"),
                if s["enabled"].as_bool() == Some(false) {
                    ", paused"
                } else {
                    ""
                },
                s["next_run"].as_str().unwrap_or("never"),
            );
        }
    }
    Ok(())
}

fn init(g: &GlobalArgs, qdrant: &[String], out: Option<&Path>, force: bool) -> Result<()> {
    let Some(repo) = g.repo.as_deref() else {
        bail!("config init needs the repository: --repo LOCATION (or CAIRN_REPOSITORY)");
    };
    let text = cairn_config::starter(repo, qdrant);
    // What is written must pass the check it points to.
    if let Err(problems) = cairn_config::parse(&text) {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("the starter config would not be valid: {}", list.join("; "));
    }
    let Some(out) = out else {
        print!("{text}");
        return Ok(());
    };
    if out.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({ "written": out.display().to_string() })
        );
    } else {
        println!(
            "wrote {}; check it with: cairn config check {}",
            out.display(),
            out.display()
        );
    }
    Ok(())
}
