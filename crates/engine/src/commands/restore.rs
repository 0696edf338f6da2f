//! `restore`: a snapshot's files (or those a filter names) under a target
//! directory, each written under a temporary name, flushed and renamed into
//! place only when complete (see [`crate::services::materialize`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_model::FileEntry;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repository::{Repository, SnapshotInfo};
use crate::services::materialize::RestoreSummary;

/// Restore settings.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore only this file, or the files under this directory.
    pub filter: Option<String>,
    /// Ranged reads in flight (default: 4 on a local repository, 16 on an
    /// object store).
    pub concurrency: Option<usize>,
    /// Flush each restored file to stable storage before renaming it into
    /// place (default). Without it files are written through the page cache
    /// and may still be in memory when the restore returns.
    pub sync: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            filter: None,
            concurrency: None,
            sync: true,
        }
    }
}

/// Selects the files a filter names: the file itself or everything under a directory.
pub(crate) fn select<'a>(
    info: &'a SnapshotInfo,
    filter: Option<&str>,
) -> Result<Vec<&'a FileEntry>> {
    let files: Vec<&FileEntry> = match filter {
        None => info.snapshot.files.iter().collect(),
        Some(f) => {
            let f = f.trim_matches('/');
            info.snapshot
                .files
                .iter()
                .filter(|e| {
                    e.path == f
                        || e.path
                            .strip_prefix(f)
                            .is_some_and(|rest| rest.starts_with('/'))
                })
                .collect()
        }
    };
    if files.is_empty() && filter.is_some() {
        return Err(Error::NoMatchingFiles {
            snapshot: info.id.to_hex(),
            filter: filter.unwrap_or_default().to_string(),
        });
    }
    Ok(files)
}

impl Repository {
    /// Restores `info`'s files (or those matching the filter) under `target`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming snapshot, file and pack when data fails
    /// verification; I/O errors on the target (no partial file is left under
    /// a final name); storage errors.
    pub async fn restore(
        &self,
        info: &SnapshotInfo,
        target: &Path,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreSummary> {
        self.require_read("restore")?;
        let lease = self.read_lease().await;
        let restored = self.restore_under_lease(info, target, opts, progress).await;
        lease.release().await;
        restored
    }

    async fn restore_under_lease(
        &self,
        info: &SnapshotInfo,
        target: &Path,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreSummary> {
        let clock = std::time::Instant::now();
        let files = select(info, opts.filter.as_deref())?;
        let index = self.chunk_index().await?;
        let reader = self.reader(opts.concurrency);
        progress.start("restore", Some(files.iter().map(|f| f.size).sum()));
        let mut summary = RestoreSummary {
            snapshot: info.id.to_hex(),
            target: target.display().to_string(),
            ..RestoreSummary::default()
        };
        let mut skipped = Vec::new();
        for file in files {
            if let Some(why) = &file.damaged {
                tracing::warn!(file = %file.path, reason = %why, "not restored: marked damaged by cairn repair snapshots");
                skipped.push(file.path.clone());
                continue;
            }
            let dest = safe_join(target, &file.path)?;
            let dir = dest.parent().unwrap_or(target).to_path_buf();
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io("cannot create directory", &dir, e))?;
            let tmp = dir.join(format!(
                ".{}.cairn-partial",
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            let out =
                std::fs::File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
            // Sized up front: the writes land anywhere in it.
            if let Err(e) = out.set_len(file.size) {
                let _ = std::fs::remove_file(&tmp);
                progress.finish();
                return Err(Error::io("cannot write", &tmp, e));
            }
            let out = Arc::new(out);
            let written = self
                .write_file(
                    info,
                    file,
                    &index,
                    Arc::clone(&out),
                    opts.sync,
                    &reader,
                    &*progress,
                )
                .await;
            let done = written.and_then(|reads| {
                summary.add_reads(&reads);
                let out = Arc::try_unwrap(out).expect("invariant: every write has finished");
                finish_file(out, opts.sync, file, &tmp, &dest)
            });
            if let Err(e) = done {
                let _ = std::fs::remove_file(&tmp);
                progress.finish();
                return Err(e);
            }
            summary.files += 1;
            summary.bytes += file.size;
        }
        // A cluster backup's record goes beside its restored shard files,
        // for a manual recovery with Qdrant's own API.
        if let Some(record) = &info.snapshot.qdrant {
            let path = target.join("cluster.json");
            let json = serde_json::to_vec_pretty(record).expect("invariant: records serialize");
            std::fs::write(&path, json).map_err(|e| Error::io("cannot write", &path, e))?;
        }
        summary.seconds = clock.elapsed().as_secs_f64();
        progress.finish();
        if !skipped.is_empty() {
            return Err(Error::Malformed {
                what: format!("snapshot {}", info.id.short()),
                reason: format!(
                    "{} other file(s) were restored, but {} file(s) were marked damaged by a repair and are not in the repository: {}",
                    summary.files,
                    skipped.len(),
                    skipped.join(", ")
                ),
            });
        }
        Ok(summary)
    }
}

/// Flushes a restored file (when `sync`), sets its time and mode and
/// renames it into place (flushing the directory too when `sync`).
fn finish_file(
    out: std::fs::File,
    sync: bool,
    file: &FileEntry,
    tmp: &Path,
    dest: &Path,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if sync {
        out.sync_all()
            .map_err(|e| Error::io("cannot flush", tmp, e))?;
    }
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(file.mtime).unwrap_or(0));
    out.set_modified(mtime)
        .map_err(|e| Error::io("cannot set time on", tmp, e))?;
    drop(out);
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(file.mode))
        .map_err(|e| Error::io("cannot set permissions on", tmp, e))?;
    std::fs::rename(tmp, dest).map_err(|e| Error::io("cannot rename into", dest, e))?;
    if !sync {
        return Ok(());
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    cairn_store::durable::sync_dir(dir).map_err(|e| Error::io("cannot flush", dir, e))
}

/// Joins a snapshot path under `target`, refusing anything that escapes it.
fn safe_join(target: &Path, rel: &str) -> Result<PathBuf> {
    let mut out = target.to_path_buf();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::Malformed {
                    what: format!("file path {rel:?}"),
                    reason: "escapes the restore target".into(),
                })
            }
            p => out.push(p),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_target() {
        let t = Path::new("/restore");
        assert_eq!(
            safe_join(t, "a/b").expect("inside"),
            Path::new("/restore/a/b")
        );
        assert!(safe_join(t, "../etc/passwd").is_err());
        assert!(safe_join(t, "a/../../x").is_err());
    }
}
