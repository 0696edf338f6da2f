//! A snapshot file's bytes from the repository: manifest → chunk locations
//! → read plans → verify → positional writes (a file on disk) or ordered
//! writes (a sink: stdout, an upload to a cluster).
//!
//! A file's chunks are located in batches and planned a horizon at a time:
//! blobs that sit near each other in one pack are fetched with one ranged
//! read (see [`crate::read`]), reads run in parallel, and every chunk is
//! decompressed and checked against its id before it is written. [`file_reads`]
//! makes the same plans without reading, for `report`'s restore estimate.

use std::collections::VecDeque;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_index::ChunkIndex;
use cairn_model::{ChunkId, FileEntry, PackId, PackLocation};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::read::{self, Blob, BlobFault, Blocking, Fetched, ReadPlan, Reader};
use crate::repository::{Repository, SnapshotInfo};

/// The smallest window a reader shared by parallel files uses.
pub(crate) const MIN_WINDOW: u64 = 8 * 1024 * 1024;

/// Windows being read at once (the next one's reads start while the last
/// reads of the current one finish).
const WINDOWS_IN_FLIGHT: usize = 2;

/// Splits requests (in pack order) into `n` groups of about equal bytes,
/// each a run of neighbouring requests.
fn split_reads(reads: Vec<read::PackRead>, n: usize) -> Vec<Vec<read::PackRead>> {
    let total: u64 = reads.iter().map(read::PackRead::len).sum();
    let share = total.div_ceil(n.max(1) as u64).max(1);
    let mut groups = vec![Vec::new()];
    let mut filled = 0u64;
    for r in reads {
        if filled >= share {
            groups.push(Vec::new());
            filled = 0;
        }
        filled += r.len();
        groups
            .last_mut()
            .expect("invariant: one group at least")
            .push(r);
    }
    groups
}

/// Windows located ahead of the ones being assembled.
const WINDOWS_AHEAD: usize = 8;

/// Chunk lists read together (about 4 MiB of file each at 4 KiB chunks,
/// 64 MiB at 64 KiB).
pub(crate) const LISTS_PER_BATCH: usize = 16;

/// Requests made and bytes read, for a file or a restore.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadTally {
    pub(crate) requests: u64,
    pub(crate) fetched: u64,
    pub(crate) needed: u64,
}

impl ReadTally {
    fn add(&mut self, p: &ReadPlan) {
        self.requests += p.reads.len() as u64;
        self.fetched += p.fetched;
        self.needed += p.needed;
    }
}

/// Which snapshot and file a restore error concerns.
#[derive(Debug)]
struct FileContext {
    snapshot: String,
    file: String,
}

impl FileContext {
    fn corrupt(&self, pack: &PackId, fault: &BlobFault) -> Error {
        read::restore_error(&self.snapshot, &self.file, pack, fault)
    }

    fn missing(&self, chunk: &ChunkId) -> Error {
        Error::MissingChunk {
            snapshot: self.snapshot.clone(),
            file: self.file.clone(),
            chunk: chunk.to_hex(),
        }
    }
}

/// A stretch of a file assembled in memory: its chunks in file order with
/// their locations, and its length.
#[derive(Default)]
struct Window {
    chunks: Vec<(ChunkId, PackLocation)>,
    len: u64,
}

/// Cuts located chunks (in file order) into windows of about [`WINDOW`]
/// bytes; the last, partial window stays in `open`.
fn cut_windows(
    size: u64,
    open: &mut Window,
    located: impl IntoIterator<Item = (ChunkId, PackLocation)>,
    out: &mut VecDeque<Window>,
) {
    for (id, loc) in located {
        open.len += u64::from(loc.raw_length);
        open.chunks.push((id, loc));
        if open.len >= size {
            out.push_back(std::mem::take(open));
        }
    }
}

/// The reads a restore to a directory makes of one file, given its chunk
/// lists and its chunks with their locations in the batches the restore
/// locates them in (the inline chunks, then one batch per
/// [`LISTS_PER_BATCH`] lists): the same list requests, horizons and plans
/// as [`Repository::restore`], so estimates match it.
pub(crate) fn file_reads(
    lists: &[(ChunkId, PackLocation)],
    batches: impl IntoIterator<Item = Vec<(ChunkId, PackLocation)>>,
    limits: &crate::read::ReadLimits,
) -> ReadTally {
    let mut tally = ReadTally::default();
    for batch in lists.chunks(LISTS_PER_BATCH) {
        tally.add(&read::plan(
            batch.iter().map(|(id, loc)| (loc.pack, Blob::at(*id, loc))),
            limits,
        ));
    }
    let mut pending: Vec<(ChunkId, PackLocation)> = Vec::new();
    for batch in batches {
        pending.extend(batch);
        if pending.len() >= limits.horizon {
            tally.add(&read::plan(placement(&pending).blobs, limits));
            pending.clear();
        }
    }
    if !pending.is_empty() {
        tally.add(&read::plan(placement(&pending).blobs, limits));
    }
    tally
}

/// The blobs a run of chunks needs, each once (tagged with its number), and
/// where each goes, relative to the run's start.
struct Placement {
    blobs: Vec<(PackId, Blob)>,
    at: Offsets,
}

/// Offsets by blob tag: `first[tag]`, then any repeats.
struct Offsets {
    first: Vec<u64>,
    /// (tag, offset) of the second and later occurrences, by tag.
    repeats: Vec<(u32, u64)>,
}

impl Offsets {
    /// Every offset of blob `tag`.
    fn of(&self, tag: u32) -> impl Iterator<Item = u64> + '_ {
        let from = self.repeats.partition_point(|(t, _)| *t < tag);
        std::iter::once(self.first[tag as usize]).chain(
            self.repeats[from..]
                .iter()
                .take_while(move |(t, _)| *t == tag)
                .map(|(_, p)| *p),
        )
    }
}

fn placement(chunks: &[(ChunkId, PackLocation)]) -> Placement {
    let mut tags: std::collections::HashMap<ChunkId, u32> =
        std::collections::HashMap::with_capacity(chunks.len());
    let mut blobs = Vec::with_capacity(chunks.len());
    let mut first = Vec::with_capacity(chunks.len());
    let mut repeats = Vec::new();
    let mut pos = 0u64;
    for (id, loc) in chunks {
        let next = u32::try_from(blobs.len()).expect("invariant: < 2^32 chunks planned at once");
        let tag = *tags.entry(*id).or_insert(next);
        if tag == next {
            blobs.push((loc.pack, Blob::at(*id, loc).tagged(tag)));
            first.push(pos);
        } else {
            repeats.push((tag, pos));
        }
        pos += u64::from(loc.raw_length);
    }
    repeats.sort_unstable();
    Placement {
        blobs,
        at: Offsets { first, repeats },
    }
}

/// Writes every blob of a fetched request at its offsets (plus `base`) in
/// `out`; blobs next to each other both in what was read and in the file go
/// in one write. Returns the bytes written.
fn write_blobs(
    ctx: &FileContext,
    out: &std::fs::File,
    base: u64,
    at: &Offsets,
    f: &Fetched,
) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    if let Some((_, fault)) = f.first_fault() {
        return Err(ctx.corrupt(&f.read.pack, fault));
    }
    let io = |e| Error::io("cannot write", &ctx.file, e);
    let mut written = 0u64;
    // The pending write: (in the decoded buffer?, source range, file offset).
    let mut run: Option<(bool, Range<usize>, u64)> = None;
    for (i, b) in f.read.blobs.iter().enumerate() {
        let (dec, span) = f.span(i).expect("invariant: no faults");
        for (k, pos) in at.of(b.tag).enumerate() {
            let pos = base + pos;
            match &mut run {
                Some((d, r, o))
                    if k == 0
                        && *d == dec
                        && r.end == span.start
                        && *o + (r.len() as u64) == pos =>
                {
                    r.end = span.end;
                }
                _ => {
                    if let Some((d, r, o)) = run.take() {
                        out.write_all_at(&f.buffer(d)[r.clone()], o).map_err(io)?;
                        written += r.len() as u64;
                    }
                    run = Some((dec, span.clone(), pos));
                }
            }
        }
    }
    if let Some((d, r, o)) = run {
        out.write_all_at(&f.buffer(d)[r.clone()], o).map_err(io)?;
        written += r.len() as u64;
    }
    Ok(written)
}

/// Copies every blob of a fetched request to its offsets in the window.
fn place(ctx: &FileContext, out: &mut [u8], at: &Offsets, f: &Fetched) -> Result<()> {
    if let Some((_, fault)) = f.first_fault() {
        return Err(ctx.corrupt(&f.read.pack, fault));
    }
    for (i, b) in f.read.blobs.iter().enumerate() {
        let data = f.blob(i).expect("invariant: no faults");
        for pos in at.of(b.tag) {
            let pos = usize::try_from(pos).expect("invariant: a window fits in memory");
            out[pos..pos + data.len()].copy_from_slice(data);
        }
    }
    Ok(())
}

/// Fails when a file's chunks do not add up to the size its manifest records.
fn check_size(info: &SnapshotInfo, file: &FileEntry, got: u64) -> Result<()> {
    if got == file.size {
        return Ok(());
    }
    Err(Error::Malformed {
        what: format!("snapshot {}, file {}", info.id.short(), file.path),
        reason: format!(
            "its chunks hold {got} bytes but the manifest records {}",
            file.size
        ),
    })
}

/// What a restore wrote, and what it read to do so (`restore --json`
/// prints exactly this).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RestoreSummary {
    /// The snapshot restored (hex id).
    pub snapshot: String,
    /// Where to (a directory, or `-` for standard output).
    pub target: String,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Ranged reads of packs (chunk lists included).
    pub requests: u64,
    /// Bytes those reads returned.
    pub bytes_read: u64,
    /// Of those, bytes no restored file needed (gaps bridged to save requests).
    pub over_read: u64,
    /// Wall time.
    pub seconds: f64,
}

impl RestoreSummary {
    pub(crate) fn add_reads(&mut self, r: &ReadTally) {
        self.requests += r.requests;
        self.bytes_read += r.fetched;
        self.over_read += r.fetched - r.needed;
    }
}

/// A destination for restored bytes, driven from a blocking thread: any
/// `Write`, or a front end's own (a channel into an upload).
pub trait Sink: Send + 'static {
    /// Takes the next bytes of the file, in order.
    ///
    /// # Errors
    /// Whatever the destination reports; the stream stops there.
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
}

/// Streams snapshot files in order into [`Sink`]s, verified, sharing one
/// reader (its requests in flight bounded across every file): the seam for
/// sending a file somewhere other than a local directory, such as an upload
/// to a Qdrant node.
pub struct FileStreamer {
    repo: Repository,
    index: Arc<ChunkIndex>,
    reader: Reader,
    /// Held while the streamer lives (released in the background when
    /// the last clone is dropped).
    _lease: Arc<crate::lease::ReadLease>,
}

impl Repository {
    /// A streamer for up to `parallel` files at once: each gets its share
    /// of the read-ahead window (never less than [`MIN_WINDOW`]).
    ///
    /// # Errors
    /// Storage and index errors bringing the chunk-index cache up to date.
    pub async fn file_streamer(&self, parallel: usize) -> Result<FileStreamer> {
        let lease = self.read_lease().await;
        self.streamer_with(parallel, lease).await
    }

    /// A streamer that takes no read lease, for a dry run, which writes
    /// nothing: a prune that sweeps while it reads may make it fail.
    ///
    /// # Errors
    /// As [`Repository::file_streamer`].
    pub async fn file_streamer_without_lease(&self, parallel: usize) -> Result<FileStreamer> {
        self.streamer_with(parallel, crate::lease::ReadLease::none())
            .await
    }

    async fn streamer_with(
        &self,
        parallel: usize,
        lease: crate::lease::ReadLease,
    ) -> Result<FileStreamer> {
        let lease = Arc::new(lease);
        let index = self.chunk_index().await?;
        let mut reader = self.reader(None);
        reader.window = (reader.window / parallel.max(1) as u64).max(MIN_WINDOW);
        Ok(FileStreamer {
            repo: self.clone(),
            index,
            reader,
            _lease: lease,
        })
    }
}

impl FileStreamer {
    /// Streams `file` of the snapshot `info` into `sink`; returns the sink
    /// when the whole file has gone into it (dropping it then ends the
    /// destination's input).
    ///
    /// # Errors
    /// [`Error::Corrupt`], [`Error::MissingChunk`], [`Error::Malformed`] for
    /// data that fails verification; the sink's own errors; storage errors.
    pub async fn stream<S: Sink>(
        &self,
        info: &SnapshotInfo,
        file: &FileEntry,
        sink: S,
        progress: &dyn Progress,
    ) -> Result<S> {
        self.repo
            .stream_file(
                info,
                file,
                &self.index,
                sink,
                &self.reader,
                progress,
                Path::new(&file.path),
            )
            .await
            .map(|(sink, _)| sink)
    }
}

impl FileStreamer {
    /// `file`'s chunks in file order with where each is stored, read from
    /// its chunk lists and the chunk index (no chunk data is read).
    ///
    /// # Errors
    /// [`Error::MissingChunk`] for a chunk no index file names; storage
    /// errors reading the lists.
    pub async fn layout(
        &self,
        info: &SnapshotInfo,
        file: &FileEntry,
    ) -> Result<Vec<(ChunkId, PackLocation)>> {
        let ctx = Arc::new(FileContext {
            snapshot: info.id.to_hex(),
            file: file.path.clone(),
        });
        let tally = std::sync::Mutex::new(ReadTally::default());
        let mut out = Vec::new();
        let mut batches = std::pin::pin!(self.repo.located_batches(
            &ctx,
            file,
            &self.index,
            &self.reader,
            &tally
        ));
        while let Some(batch) = batches.try_next().await? {
            out.extend(batch);
        }
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Sink for W {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_all(data)
    }
}

impl Repository {
    /// Restores one file into `out` (created and sized by the caller) with
    /// positional writes: its chunks are located in batches and planned up
    /// to the reader's horizon of chunks at a time, each request's blobs written at their
    /// offsets as it arrives. With `writeback`, each finished horizon is
    /// handed to the device at once (see
    /// [`cairn_store::durable::start_writeback`]), so the caller's final
    /// `fsync` waits for the last one only. Returns what was read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_file(
        &self,
        info: &SnapshotInfo,
        file: &FileEntry,
        index: &Arc<ChunkIndex>,
        out: Arc<std::fs::File>,
        writeback: bool,
        reader: &Reader,
        progress: &dyn Progress,
    ) -> Result<ReadTally> {
        let ctx = Arc::new(FileContext {
            snapshot: info.id.to_hex(),
            file: file.path.clone(),
        });
        let tally = std::sync::Mutex::new(ReadTally::default());
        let horizon = reader.limits.horizon;
        // Chunk lists are read and chunks located one horizon ahead of the
        // horizon being written.
        let (htx, mut hrx) = mpsc::channel::<Result<Vec<(ChunkId, PackLocation)>>>(1);
        let produce = async {
            let mut pending: Vec<(ChunkId, PackLocation)> = Vec::new();
            let result: Result<()> = async {
                let mut batches =
                    std::pin::pin!(self.located_batches(&ctx, file, index, reader, &tally));
                while let Some(batch) = batches.try_next().await? {
                    pending.extend(batch);
                    if pending.len() >= horizon {
                        if htx.send(Ok(std::mem::take(&mut pending))).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                if !pending.is_empty() {
                    let _ = htx.send(Ok(pending)).await;
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = htx.send(Err(e)).await;
            }
            drop(htx);
        };
        let consume = async {
            let mut base = 0u64;
            while let Some(chunks) = hrx.recv().await {
                let len = self
                    .write_horizon(&ctx, &chunks?, base, &out, reader, &tally, progress)
                    .await?;
                if writeback {
                    // Best effort: the final fsync makes the file durable
                    // either way.
                    if let Err(e) = cairn_store::durable::start_writeback(&out, base, len) {
                        tracing::debug!(file = %ctx.file, error = %e, "early writeback refused");
                    }
                }
                base += len;
            }
            Ok::<u64, Error>(base)
        };
        let ((), written) = tokio::join!(produce, consume);
        check_size(info, file, written?)?;
        let tally = *tally.lock().expect("invariant: tally lock is not poisoned");
        Ok(tally)
    }

    /// Reads and writes one horizon of chunks that start at `base` in the
    /// file; returns their length. On a local repository the requests are
    /// split into as many groups as reads may be in flight, each read,
    /// decoded and written on one blocking thread; elsewhere they are
    /// fetched in parallel and written as they arrive.
    #[allow(clippy::too_many_arguments)]
    async fn write_horizon(
        &self,
        ctx: &Arc<FileContext>,
        chunks: &[(ChunkId, PackLocation)],
        base: u64,
        out: &Arc<std::fs::File>,
        reader: &Reader,
        tally: &std::sync::Mutex<ReadTally>,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let len: u64 = chunks.iter().map(|(_, l)| u64::from(l.raw_length)).sum();
        let Placement { blobs, at } = placement(chunks);
        let plan = read::plan(blobs, &reader.limits);
        tally
            .lock()
            .expect("invariant: tally lock is not poisoned")
            .add(&plan);
        let at = Arc::new(at);
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let write = {
            let (ctx, out, at, written) = (
                Arc::clone(ctx),
                Arc::clone(out),
                Arc::clone(&at),
                Arc::clone(&written),
            );
            move |f: &Fetched| -> Result<()> {
                let n = write_blobs(&ctx, &out, base, &at, f)?;
                written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        };
        let groups = split_reads(plan.reads, reader.limits.concurrency);
        let mut rest = Vec::new();
        let local = futures::future::join_all(groups.into_iter().map(|g| {
            let write = write.clone();
            self.fetch_blocking(g, reader, (), move |(), f: &Fetched| write(f))
        }));
        // Progress while the groups run, from what they have written.
        let results = {
            let mut local = std::pin::pin!(local);
            let mut shown = 0;
            loop {
                let tick = tokio::time::sleep(std::time::Duration::from_millis(100));
                tokio::select! {
                    r = &mut local => break r,
                    () = tick => {
                        let now = written.load(std::sync::atomic::Ordering::Relaxed);
                        progress.advance(now - shown);
                        shown = now;
                    }
                }
            }
        };
        for r in results {
            match r {
                Blocking::Done(done) => done?,
                Blocking::Unsupported(reads, ()) => rest.extend(reads),
            }
        }
        if !rest.is_empty() {
            let then = Arc::new(move |f: Fetched| -> Result<Fetched> {
                write(&f)?;
                Ok(f)
            });
            self.fetch(rest, reader, then)
                .try_for_each(|f| {
                    let (a, b) = f.into_buffers();
                    reader.buffers.give(a);
                    reader.buffers.give(b);
                    async { Ok(()) }
                })
                .await?;
        }
        Ok(len)
    }

    /// Fetches, verifies and writes one file's chunks in order; returns the
    /// sink and what was read. The file is assembled a window at a time
    /// (see [`WINDOW`]): each window's chunks are looked up in one batch and
    /// read with a [`read::plan`], so memory does not grow with the file.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn stream_file<S: Sink>(
        &self,
        info: &SnapshotInfo,
        file: &FileEntry,
        index: &Arc<ChunkIndex>,
        sink: S,
        reader: &Reader,
        progress: &dyn Progress,
        dest: &Path,
    ) -> Result<(S, ReadTally)> {
        let ctx = Arc::new(FileContext {
            snapshot: info.id.to_hex(),
            file: file.path.clone(),
        });
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1);
        let dest_owned: PathBuf = dest.to_path_buf();
        let buffers = Arc::clone(&reader.windows);
        let writer = tokio::task::spawn_blocking(move || -> Result<(S, u64)> {
            let mut sink = sink;
            let mut total = 0u64;
            while let Some(buf) = rx.blocking_recv() {
                let written = sink.write(&buf);
                total += buf.len() as u64;
                buffers.give(buf);
                written.map_err(|e| Error::io("cannot write", &dest_owned, e))?;
            }
            Ok((sink, total))
        });
        let tally = std::sync::Mutex::new(ReadTally::default());
        // Chunk lists are read and chunks located ahead of the windows being
        // assembled (up to WINDOWS_AHEAD windows), so neither waits on the other.
        let (wtx, mut wrx) = mpsc::channel::<Result<Window>>(WINDOWS_AHEAD);
        let produce = async {
            let mut windows = std::pin::pin!(self.windows(&ctx, file, index, reader, &tally));
            while let Some(w) = windows.next().await {
                let failed = w.is_err();
                if wtx.send(w).await.is_err() || failed {
                    break;
                }
            }
            drop(wtx);
        };
        let consume = async {
            futures::stream::poll_fn(|cx| wrx.poll_recv(cx))
                .map(|w| async {
                    let w = w?;
                    self.assemble(&ctx, w, reader, &tally).await
                })
                .buffered(WINDOWS_IN_FLIGHT)
                .try_for_each(|buf| {
                    let n = buf.len() as u64;
                    let tx = &tx;
                    async move {
                        // A closed channel means the writer failed; the caller reports its error.
                        let _ = tx.send(buf).await;
                        progress.advance(n);
                        Ok(())
                    }
                })
                .await
        };
        let ((), sent) = tokio::join!(produce, consume);
        drop(tx);
        let written = writer.await.expect("invariant: writer does not panic");
        // A write error closes the channel; report it rather than the send failure.
        let (sink, total) = written?;
        sent?;
        check_size(info, file, total)?;
        let tally = *tally.lock().expect("invariant: tally lock is not poisoned");
        Ok((sink, tally))
    }

    /// A file's chunks, located, a batch at a time in file order: its
    /// inline chunks, then [`LISTS_PER_BATCH`] chunk lists at a time (their
    /// reads planned together, their chunks located in one index lookup).
    fn located_batches<'a>(
        &'a self,
        ctx: &'a Arc<FileContext>,
        file: &'a FileEntry,
        index: &'a Arc<ChunkIndex>,
        reader: &'a Reader,
        tally: &'a std::sync::Mutex<ReadTally>,
    ) -> impl futures::Stream<Item = Result<Vec<(ChunkId, PackLocation)>>> + 'a {
        let inline = (!file.chunks.is_empty()).then(|| file.chunks.clone());
        futures::stream::try_unfold((inline, 0), move |(inline, next)| async move {
            let (ids, next) = match inline {
                Some(ids) => (ids, next),
                None if next < file.chunk_lists.len() => {
                    let end = (next + LISTS_PER_BATCH).min(file.chunk_lists.len());
                    let lists = &file.chunk_lists[next..end];
                    (
                        self.read_chunk_lists(ctx, lists, index, reader, tally)
                            .await?,
                        end,
                    )
                }
                None => return Ok(None),
            };
            Ok(Some((locate(ctx, index, ids).await?, (None, next))))
        })
    }

    /// The windows of a file, in order, cut from its located batches.
    fn windows<'a>(
        &'a self,
        ctx: &'a Arc<FileContext>,
        file: &'a FileEntry,
        index: &'a Arc<ChunkIndex>,
        reader: &'a Reader,
        tally: &'a std::sync::Mutex<ReadTally>,
    ) -> impl futures::Stream<Item = Result<Window>> + 'a {
        let batches = Box::pin(self.located_batches(ctx, file, index, reader, tally));
        let state = (batches, Some(Window::default()), VecDeque::new());
        futures::stream::try_unfold(
            state,
            move |(mut batches, mut open, mut ready)| async move {
                loop {
                    if let Some(w) = ready.pop_front() {
                        return Ok(Some((w, (batches, open, ready))));
                    }
                    let Some(mut current) = open.take() else {
                        return Ok(None);
                    };
                    match batches.try_next().await? {
                        Some(located) => {
                            cut_windows(reader.window, &mut current, located, &mut ready);
                            open = Some(current);
                        }
                        // The last, partly filled window.
                        None if current.len > 0 || !current.chunks.is_empty() => {
                            ready.push_back(current);
                        }
                        None => {}
                    }
                }
            },
        )
    }

    /// Reads a window's chunks with one read plan and assembles the
    /// window's bytes.
    async fn assemble(
        &self,
        ctx: &Arc<FileContext>,
        w: Window,
        reader: &Reader,
        tally: &std::sync::Mutex<ReadTally>,
    ) -> Result<Vec<u8>> {
        let Placement { blobs, at } = placement(&w.chunks);
        let plan = read::plan(blobs, &reader.limits);
        tally
            .lock()
            .expect("invariant: tally lock is not poisoned")
            .add(&plan);
        let len = usize::try_from(w.len).expect("invariant: a window fits in memory");
        drop(w);
        // Every byte is overwritten by the window's chunks.
        let out = reader.windows.take_len(len);
        let at = Arc::new(at);
        // A local repository: the whole window on one blocking thread (no
        // hand-offs per request); windows in flight give the parallelism.
        let placing = {
            let ctx = Arc::clone(ctx);
            let at = Arc::clone(&at);
            move |out: &mut Vec<u8>, f: &Fetched| place(&ctx, out, &at, f)
        };
        let (plan, out) = match self.fetch_blocking(plan.reads, reader, out, placing).await {
            Blocking::Done(done) => return done,
            Blocking::Unsupported(reads, out) => (reads, out),
        };
        let out = Arc::new(std::sync::Mutex::new(out));
        let then = {
            let out = Arc::clone(&out);
            let ctx = Arc::clone(ctx);
            let buffers = Arc::clone(&reader.buffers);
            Arc::new(move |f: Fetched| -> Result<()> {
                {
                    let mut out = out.lock().expect("invariant: window lock is not poisoned");
                    place(&ctx, &mut out, &at, &f)?;
                }
                let (a, b) = f.into_buffers();
                buffers.give(a);
                buffers.give(b);
                Ok(())
            })
        };
        self.fetch(plan, reader, then)
            .try_for_each(|()| async { Ok(()) })
            .await?;
        let out = Arc::try_unwrap(out).expect("invariant: every read has finished");
        Ok(out
            .into_inner()
            .expect("invariant: window lock is not poisoned"))
    }

    /// Reads chunk lists (one read plan for all) and returns their ids
    /// concatenated, in order.
    async fn read_chunk_lists(
        &self,
        ctx: &Arc<FileContext>,
        lists: &[ChunkId],
        index: &Arc<ChunkIndex>,
        reader: &Reader,
        tally: &std::sync::Mutex<ReadTally>,
    ) -> Result<Vec<ChunkId>> {
        let located = locate(ctx, index, lists.to_vec()).await?;
        let plan = read::plan(
            located
                .iter()
                .map(|(id, loc)| (loc.pack, Blob::at(*id, loc))),
            &reader.limits,
        );
        tally
            .lock()
            .expect("invariant: tally lock is not poisoned")
            .add(&plan);
        let decoded: Vec<Result<Vec<(ChunkId, Vec<ChunkId>)>>> = self
            .fetch(plan.reads, reader, {
                let ctx = Arc::clone(ctx);
                Arc::new(move |f: Fetched| {
                    let mut out = Vec::with_capacity(f.read.blobs.len());
                    for (i, b) in f.read.blobs.iter().enumerate() {
                        let raw = f
                            .blob(i)
                            .map_err(|fault| ctx.corrupt(&f.read.pack, fault))?;
                        let ids = read::list_ids(raw).ok_or_else(|| {
                            ctx.corrupt(
                                &f.read.pack,
                                &BlobFault::Bad(format!("chunk list {} has a partial id", b.id)),
                            )
                        })?;
                        out.push((b.id, ids));
                    }
                    Ok(out)
                })
            })
            .collect()
            .await;
        let mut by_id: std::collections::HashMap<ChunkId, Vec<ChunkId>> =
            std::collections::HashMap::with_capacity(lists.len());
        for d in decoded {
            by_id.extend(d?);
        }
        let mut ids = Vec::new();
        for list in lists {
            ids.extend_from_slice(by_id.get(list).ok_or_else(|| ctx.missing(list))?);
        }
        Ok(ids)
    }
}

/// Looks `ids` up in the chunk index in one batch, off the runtime; a chunk
/// no index file names is an error naming it.
async fn locate(
    ctx: &FileContext,
    index: &Arc<ChunkIndex>,
    ids: Vec<ChunkId>,
) -> Result<Vec<(ChunkId, PackLocation)>> {
    let (ids, locs) = {
        let index = Arc::clone(index);
        tokio::task::spawn_blocking(move || index.get_many_present(&ids).map(|l| (ids, l)))
            .await
            .expect("invariant: lookup does not panic")?
    };
    ids.into_iter()
        .zip(locs)
        .map(|(id, loc)| loc.map(|l| (id, l)).ok_or_else(|| ctx.missing(&id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_model::{Codec, IndexEntry, IndexGroup};

    fn ctx() -> FileContext {
        FileContext {
            snapshot: "snap".into(),
            file: "file".into(),
        }
    }

    fn loc(pack: u8, offset: u64, length: u32) -> PackLocation {
        PackLocation {
            pack: PackId([pack; 32]),
            offset,
            length,
            raw_length: length,
            codec: Codec::Raw,
        }
    }

    fn id(n: u32) -> ChunkId {
        ChunkId::of(&n.to_le_bytes())
    }

    #[test]
    fn windows_are_cut_by_decoded_length() {
        let mut open = Window::default();
        let mut ready = VecDeque::new();
        let chunks: Vec<_> = (0..10)
            .map(|i| (id(i), loc(1, u64::from(i) * 40, 40)))
            .collect();
        cut_windows(100, &mut open, chunks[..4].iter().copied(), &mut ready);
        cut_windows(100, &mut open, chunks[4..].iter().copied(), &mut ready);
        // Every window ends at the first chunk that reaches 100 bytes.
        let lens: Vec<(usize, u64)> = ready.iter().map(|w| (w.chunks.len(), w.len)).collect();
        assert_eq!(lens, vec![(3, 120), (3, 120), (3, 120)]);
        assert_eq!((open.chunks.len(), open.len), (1, 40));
    }

    #[test]
    fn a_chunk_repeated_in_a_window_is_read_once_and_placed_at_every_offset() {
        let w = Window {
            chunks: vec![
                (id(1), loc(1, 0, 10)),
                (id(2), loc(1, 10, 5)),
                (id(1), loc(1, 0, 10)),
                (id(1), loc(1, 0, 10)),
            ],
            len: 35,
        };
        let p = placement(&w.chunks);
        assert_eq!(p.blobs.len(), 2);
        let of = |tag| p.at.of(tag).collect::<Vec<u64>>();
        assert_eq!(of(p.blobs[0].1.tag), vec![0, 15, 25]);
        assert_eq!(of(p.blobs[1].1.tag), vec![10]);
    }

    #[test]
    fn file_reads_plan_list_batches_and_horizons_as_the_restore_does() {
        // 40 chunks of 1 MiB in one pack, in pack order but listed
        // backwards, in batches of 10: a horizon of 20 chunks sorts each
        // half into requests of up to 8 MiB (3 each).
        let mib = 1u32 << 20;
        let chunks: Vec<_> = (0..40u32)
            .rev()
            .map(|i| (id(i), loc(1, u64::from(i) * u64::from(mib), mib)))
            .collect();
        let lists: Vec<_> = (0..20u32)
            .map(|i| (id(1000 + i), loc(2, u64::from(i) * 64, 64)))
            .collect();
        let limits = crate::read::ReadLimits {
            max_request: 8 << 20,
            over_read: 0.0,
            horizon: 20,
            ..crate::read::ReadLimits::LOCAL
        };
        let t = file_reads(&lists, chunks.chunks(10).map(<[_]>::to_vec), &limits);
        // Lists: 16 + 4 in two batches, one request each; data: 3 + 3.
        assert_eq!(t.requests, 2 + 3 + 3);
        assert_eq!(t.needed, 20 * 64 + 40 * u64::from(mib));
        assert_eq!(t.fetched, t.needed);
    }

    #[tokio::test]
    async fn a_missing_chunk_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Arc::new(ChunkIndex::open(&dir.path().join("idx")).expect("index"));
        let known = id(7);
        index
            .ingest(
                &cairn_model::IndexId([1; 32]),
                &[IndexGroup {
                    pack: PackId([3; 32]),
                    pack_length: 1000,
                    entries: vec![IndexEntry {
                        id: known,
                        offset: 16,
                        length: 10,
                        raw_length: 10,
                        codec: Codec::Raw,
                    }],
                }],
            )
            .expect("ingest");
        let found = locate(&ctx(), &index, vec![known]).await.expect("located");
        assert_eq!(found[0].1.offset, 16);
        let err = locate(&ctx(), &index, vec![known, id(8)])
            .await
            .err()
            .expect("missing");
        assert!(err.to_string().contains(&id(8).to_hex()), "{err}");
    }
}
