//! `backup` of files, directories and stdin: collects the inputs, runs them
//! through the backup pipeline ([`crate::services::ingest`]) and commits the
//! snapshot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_model::Snapshot;

use crate::error::{Error, Result};
use crate::host::hostname;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::services::ingest::{BackupOptions, BackupSummary, Input, InputSource, RunShape};

/// What to back up.
#[derive(Debug, Clone)]
pub enum BackupSource {
    /// Files and directories (recursively); each is stored under its own name.
    Paths(Vec<PathBuf>),
    /// Standard input, stored as one file called `name`.
    Stdin {
        /// File name in the snapshot.
        name: String,
    },
}

/// The inputs of `source`; standard input gets the snapshot's time as its
/// modification time.
fn collect_inputs(
    source: &BackupSource,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Input>> {
    let paths = match source {
        BackupSource::Stdin { name } => {
            return Ok(vec![Input {
                name: name.clone(),
                size: None,
                mode: 0o644,
                mtime: time.timestamp(),
                source: InputSource::Stdin,
            }])
        }
        BackupSource::Paths(p) => p,
    };
    let mut out = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| Error::io("cannot resolve", p, e))?;
        let name = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".to_string());
        walk(&abs, &name, &mut out)?;
    }
    let mut names = HashSet::new();
    for i in &out {
        if !names.insert(i.name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "two inputs would be stored as {:?}; back them up separately",
                i.name
            )));
        }
    }
    Ok(out)
}

fn walk(path: &Path, name: &str, out: &mut Vec<Input>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io("cannot list", path, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("cannot list", path, e))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let child = format!("{name}/{}", e.file_name().to_string_lossy());
            walk(&e.path(), &child, out)?;
        }
    } else if meta.is_file() {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        out.push(Input {
            name: name.to_string(),
            size: Some(meta.len()),
            mode: meta.permissions().mode() & 0o7777,
            mtime,
            source: InputSource::File(path.to_path_buf()),
        });
    } else {
        tracing::warn!(path = %path.display(), "skipping: not a regular file or directory");
    }
    Ok(())
}

impl Repository {
    /// Backs up `source` and writes a snapshot manifest.
    ///
    /// # Errors
    /// Unreadable inputs, storage or index failures, [`Error::Interrupted`]
    /// when cancelled (packs uploaded so far stay indexed and are reused).
    pub async fn backup(
        &self,
        source: BackupSource,
        opts: BackupOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<BackupSummary> {
        let clock = std::time::Instant::now();
        let started = opts.time.unwrap_or_else(chrono::Utc::now);
        let inputs = collect_inputs(&source, started)?;
        let host = opts.host.clone().unwrap_or_else(hostname);
        let tags = opts.tags.clone();
        let run = self
            .run_inputs(inputs, opts, RunShape::SEQUENTIAL, progress)
            .await?;
        let source = match source {
            BackupSource::Paths(p) => p
                .iter()
                .map(|p| {
                    std::path::absolute(p)
                        .unwrap_or_else(|_| p.clone())
                        .display()
                        .to_string()
                })
                .collect(),
            BackupSource::Stdin { name } => vec![format!("<stdin> as {name}")],
        };
        let snapshot = Snapshot {
            // The repository's version: manifests did not change in
            // version 2, so older readers of a version 1 repository can read them.
            version: self.config.version,
            time: started,
            host,
            tags,
            source,
            files: run.files.into_iter().flatten().collect(),
            totals: run.totals,
            qdrant: None,
        };
        let mut summary = self.commit_snapshot(snapshot, run.commit).await?;
        summary.seconds = clock.elapsed().as_secs_f64();
        Ok(summary)
    }
}
