//! Restore and dump: manifest → chunk locations → ranged pack reads →
//! verify → ordered writes.
//!
//! Chunks that sit next to each other in one pack are fetched with one ranged
//! read; up to `concurrency` reads run at once and their results are written
//! in file order by a writer thread. Every chunk is decompressed and checked
//! against its id before it is written. Restored files are written under a
//! temporary name and renamed into place only when complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_index::ChunkIndex;
use cairn_model::{ChunkId, Codec, FileEntry, PackId, PackLocation};
use cairn_store::durable::DurableFile;
use cairn_store::keys;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::{Error, Progress, Repository, Result, SnapshotInfo};

/// Restore settings.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore only this file, or the files under this directory.
    pub filter: Option<String>,
    /// Ranged reads in flight (default 8).
    pub concurrency: usize,
    /// Flush each restored file to stable storage before renaming it into
    /// place (default). Without it files are written through the page cache
    /// and may still be in memory when the restore returns.
    pub sync: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            filter: None,
            concurrency: 8,
            sync: true,
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Default)]
pub struct RestoreSummary {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Largest single ranged read. Memory in flight is about
/// (concurrency × 2 + [`WRITE_QUEUE`]) runs of this size.
const MAX_RUN: u64 = 8 * 1024 * 1024;

/// Decoded runs queued for the writer.
const WRITE_QUEUE: usize = 2;

/// Direct writes in flight to a restored file.
const WRITE_DEPTH: usize = 3;

/// Consecutive chunks stored back to back in one pack.
struct Run {
    pack: PackId,
    start: u64,
    end: u64,
    chunks: Vec<(ChunkId, PackLocation)>,
}

/// Which snapshot and file a restore error concerns, and the file's
/// reusable read and decode buffers.
#[derive(Debug, Default)]
struct FileContext {
    snapshot: String,
    file: String,
    buffers: BufferPool,
}

/// Run-sized buffers cycled between reads, decoding and the writer, so a
/// restore does not fault in fresh memory for every run (costly on virtual
/// machines). Holds at most [`BufferPool::MAX`] idle buffers.
#[derive(Debug, Default)]
struct BufferPool(std::sync::Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    const MAX: usize = 8;

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut bufs) = self.0.lock() {
            if bufs.len() < Self::MAX {
                bufs.push(buf);
            }
        }
    }
}

impl FileContext {
    fn corrupt(&self, pack: &PackId, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            snapshot: self.snapshot.clone(),
            file: self.file.clone(),
            pack: pack.to_hex(),
            reason: reason.into(),
        }
    }

    fn missing(&self, chunk: &ChunkId) -> Error {
        Error::MissingChunk {
            snapshot: self.snapshot.clone(),
            file: self.file.clone(),
            chunk: chunk.to_hex(),
        }
    }
}

fn plan_runs(
    ids: &[ChunkId],
    locs: Vec<Option<PackLocation>>,
    ctx: &FileContext,
) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    for (id, loc) in ids.iter().zip(locs) {
        let loc = loc.ok_or_else(|| ctx.missing(id))?;
        let end = loc.offset + u64::from(loc.length);
        match runs.last_mut() {
            Some(r) if r.pack == loc.pack && r.end == loc.offset && end - r.start <= MAX_RUN => {
                r.end = end;
                r.chunks.push((*id, loc));
            }
            _ => runs.push(Run {
                pack: loc.pack,
                start: loc.offset,
                end,
                chunks: vec![(*id, loc)],
            }),
        }
    }
    Ok(runs)
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

/// A destination for restored bytes, driven from a blocking thread.
pub(crate) trait Sink: Send + 'static {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
}

impl<W: Write + Send + 'static> Sink for W {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_all(data)
    }
}

/// Restored files bypass the page cache where they can and are flushed to
/// stable storage before they get their final name.
struct FileSink(DurableFile);

impl Sink for FileSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }
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
        let files = select(info, opts.filter.as_deref())?;
        let index = self.chunk_index().await?;
        progress.start("restore", Some(files.iter().map(|f| f.size).sum()));
        let mut summary = RestoreSummary::default();
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
            let out = if opts.sync {
                DurableFile::create(&tmp, false, Some(file.size))
                    .map(|f| FileSink(f.with_depth(WRITE_DEPTH)))
            } else {
                DurableFile::create_unsynced(&tmp, false).map(FileSink)
            };
            let out = out.map_err(|e| Error::io("cannot create", &tmp, e))?;
            let written = self
                .stream_file(info, file, &index, out, opts.concurrency, &*progress, &tmp)
                .await;
            let done = written.and_then(|out| finish_file(out.0, file, &tmp, &dest));
            if let Err(e) = done {
                let _ = std::fs::remove_file(&tmp);
                progress.finish();
                return Err(e);
            }
            summary.files += 1;
            summary.bytes += file.size;
        }
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

    /// Writes one file of a snapshot to `out` (e.g. stdout).
    ///
    /// # Errors
    /// As [`Repository::restore`]; [`Error::NoMatchingFiles`] when the path is
    /// not a file of the snapshot.
    pub async fn dump<W: Write + Send + 'static>(
        &self,
        info: &SnapshotInfo,
        path: &str,
        out: W,
    ) -> Result<u64> {
        let file = info
            .snapshot
            .files
            .iter()
            .find(|f| f.path == path.trim_matches('/'))
            .ok_or_else(|| Error::NoMatchingFiles {
                snapshot: info.id.to_hex(),
                filter: path.to_string(),
            })?;
        if let Some(why) = &file.damaged {
            return Err(Error::Malformed {
                what: format!("snapshot {}, file {}", info.id.short(), file.path),
                reason: format!("marked damaged by a repair: {why}"),
            });
        }
        let index = self.chunk_index().await?;
        let mut out = self
            .stream_file(
                info,
                file,
                &index,
                out,
                8,
                &crate::NoProgress,
                Path::new("<stdout>"),
            )
            .await?;
        out.flush()
            .map_err(|e| Error::io("cannot write", "<stdout>", e))?;
        Ok(file.size)
    }

    /// Fetches, verifies and writes one file's chunks in order; returns the sink.
    /// Large files are processed one chunk list at a time, so memory does not
    /// grow with the file's size.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn stream_file<S: Sink>(
        &self,
        info: &SnapshotInfo,
        file: &FileEntry,
        index: &Arc<ChunkIndex>,
        sink: S,
        concurrency: usize,
        progress: &dyn Progress,
        dest: &Path,
    ) -> Result<S> {
        let ctx = Arc::new(FileContext {
            snapshot: info.id.to_hex(),
            file: file.path.clone(),
            buffers: BufferPool::default(),
        });
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let dest_owned: PathBuf = dest.to_path_buf();
        let writer_ctx = Arc::clone(&ctx);
        let writer = tokio::task::spawn_blocking(move || -> Result<(S, u64)> {
            let mut sink = sink;
            let mut total = 0u64;
            while let Some(buf) = rx.blocking_recv() {
                let written = sink.write(&buf);
                total += buf.len() as u64;
                writer_ctx.buffers.give(buf);
                written.map_err(|e| Error::io("cannot write", &dest_owned, e))?;
            }
            Ok((sink, total))
        });
        let sent = async {
            if file.chunk_lists.is_empty() {
                return self
                    .send_chunks(&ctx, &file.chunks, index, &tx, concurrency, progress)
                    .await;
            }
            for list in &file.chunk_lists {
                let ids = self.read_chunk_list(&ctx, *list, index).await?;
                self.send_chunks(&ctx, &ids, index, &tx, concurrency, progress)
                    .await?;
            }
            Ok(())
        }
        .await;
        drop(tx);
        let written = writer.await.expect("invariant: writer does not panic");
        // A write error closes the channel; report it rather than the send failure.
        let (sink, total) = written?;
        sent?;
        if total != file.size {
            return Err(Error::Malformed {
                what: format!("snapshot {}, file {}", info.id.short(), file.path),
                reason: format!(
                    "its chunks hold {total} bytes but the manifest records {}",
                    file.size
                ),
            });
        }
        Ok(sink)
    }

    /// Plans the ranged reads for `ids` (one batched index lookup).
    async fn plan(
        &self,
        ctx: &FileContext,
        ids: &[ChunkId],
        index: &Arc<ChunkIndex>,
    ) -> Result<Vec<Run>> {
        let locs = {
            let index = index.clone();
            let ids = ids.to_vec();
            tokio::task::spawn_blocking(move || index.get_many(&ids))
                .await
                .expect("invariant: lookup does not panic")?
        };
        plan_runs(ids, locs, ctx)
    }

    /// Reads one run from its pack, then decodes and verifies its chunks off
    /// the runtime; returns their raw bytes concatenated.
    async fn fetch_run(&self, ctx: Arc<FileContext>, run: Run) -> Result<Vec<u8>> {
        let stored = self
            .store
            .get_range_into(
                &keys::pack(&run.pack),
                run.start..run.end,
                ctx.buffers.take(),
            )
            .await
            .map_err(|e| match e {
                cairn_store::Error::NotFound { .. } => ctx.corrupt(&run.pack, "pack is missing"),
                other => other.into(),
            })?;
        tokio::task::spawn_blocking(move || {
            let short = || ctx.corrupt(&run.pack, "pack is shorter than its index says");
            if stored.len() as u64 != run.end - run.start {
                return Err(short());
            }
            // A run of raw chunks is its own decoded form: verify in place.
            if run.chunks.iter().all(|(_, l)| l.codec == Codec::Raw) {
                let mut from = 0;
                for (id, loc) in &run.chunks {
                    let blob = &stored[from..from + loc.length as usize];
                    cairn_pack::verify_raw(blob, *id, loc.raw_length)
                        .map_err(|e| ctx.corrupt(&run.pack, e.to_string()))?;
                    from += loc.length as usize;
                }
                return Ok(stored);
            }
            let mut out = ctx.buffers.take();
            out.reserve(run.chunks.iter().map(|(_, l)| l.raw_length as usize).sum());
            for (id, loc) in &run.chunks {
                let from =
                    usize::try_from(loc.offset - run.start).expect("invariant: run < 16 MiB");
                let blob = stored
                    .get(from..from + loc.length as usize)
                    .ok_or_else(short)?;
                cairn_pack::decode_blob_into(blob, *id, loc.codec, loc.raw_length, &mut out)
                    .map_err(|e| ctx.corrupt(&run.pack, e.to_string()))?;
            }
            ctx.buffers.give(stored);
            Ok(out)
        })
        .await
        .expect("invariant: decode does not panic")
    }

    /// Reads and verifies one chunk-list blob.
    async fn read_chunk_list(
        &self,
        ctx: &Arc<FileContext>,
        list: ChunkId,
        index: &Arc<ChunkIndex>,
    ) -> Result<Vec<ChunkId>> {
        let mut runs = self.plan(ctx, &[list], index).await?;
        let run = runs.pop().expect("invariant: one id plans one run");
        let pack = run.pack;
        let raw = self.fetch_run(ctx.clone(), run).await?;
        if raw.len() % 32 != 0 {
            return Err(ctx.corrupt(&pack, format!("chunk list {list} has a partial id")));
        }
        Ok(raw.chunks_exact(32).map(ChunkId::from_slice).collect())
    }

    /// Fetches `ids` with ranged reads (up to `concurrency` at once), verifies
    /// each chunk and sends the bytes, in order, to the writer.
    async fn send_chunks(
        &self,
        ctx: &Arc<FileContext>,
        ids: &[ChunkId],
        index: &Arc<ChunkIndex>,
        tx: &mpsc::Sender<Vec<u8>>,
        concurrency: usize,
        progress: &dyn Progress,
    ) -> Result<()> {
        let runs = self.plan(ctx, ids, index).await?;
        futures::stream::iter(runs)
            .map(|run| self.fetch_run(ctx.clone(), run))
            .buffered(concurrency.max(1))
            .try_for_each(|buf| {
                let n = buf.len() as u64;
                async move {
                    // A closed channel means the writer failed; the caller reports its error.
                    let _ = tx.send(buf).await;
                    progress.advance(n);
                    Ok(())
                }
            })
            .await
    }
}

fn finish_file(out: DurableFile, file: &FileEntry, tmp: &Path, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // An unsynced file's name need not be durable either.
    let sync = out.is_synced();
    let (out, _) = out
        .finish()
        .map_err(|e| Error::io("cannot write", tmp, e))?;
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
    use cairn_model::Codec;

    fn ctx() -> FileContext {
        FileContext {
            snapshot: "snap".into(),
            file: "file".into(),
            ..FileContext::default()
        }
    }

    fn loc(pack: u8, offset: u64, length: u32) -> Option<PackLocation> {
        Some(PackLocation {
            pack: PackId::of(&[pack]),
            offset,
            length,
            raw_length: length,
            codec: Codec::Raw,
        })
    }

    #[test]
    fn adjacent_chunks_in_one_pack_share_a_read() {
        let ids: Vec<ChunkId> = (0..4u8).map(|i| ChunkId::of(&[i])).collect();
        let runs = plan_runs(
            &ids,
            vec![loc(1, 16, 10), loc(1, 26, 5), loc(2, 16, 7), loc(1, 100, 1)],
            &ctx(),
        )
        .expect("all located");
        let shape: Vec<(u64, u64, usize)> = runs
            .iter()
            .map(|r| (r.start, r.end, r.chunks.len()))
            .collect();
        assert_eq!(shape, vec![(16, 31, 2), (16, 23, 1), (100, 101, 1)]);
    }

    #[test]
    fn a_missing_chunk_is_named() {
        let ids = [ChunkId::of(b"x")];
        let err = plan_runs(&ids, vec![None], &ctx()).err().expect("missing");
        assert!(err.to_string().contains(&ids[0].to_hex()));
    }

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
