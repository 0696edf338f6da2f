//! The backup pipeline every backup command runs its inputs through:
//! read → chunk → hash → look up → compress → pack → upload → index →
//! manifest ([`crate::commands::backup`] for files and stdin, the cluster
//! crate's streams for live Qdrant shards).
//!
//! Stages and their threads:
//! - reader threads (one, or `parallel` for a cluster's shards) each take the
//!   next input and read it in large blocks; while one reads the
//!   next block, the rayon pool finds the current block's chunk boundaries
//!   (in parallel pieces, see [`BlockReader`]) and hashes its chunks
//!   (bounded channel of [`Block`]s to the packer);
//! - the packer thread looks a block's ids up in the local index in one
//!   batch, compresses the new chunks on the pool and appends them to the
//!   open pack;
//! - full packs are uploaded by tokio tasks (at most `upload_concurrency` at
//!   once); each task finishes the pack (trailer, checksum and id, on a
//!   blocking thread), writes it, then its index file, then reports back so
//!   the packer records the chunks in the local index.
//!
//! Chunks packed but not yet recorded stay in the packer's in-flight set, so a
//! chunk is stored once even when it repeats before its pack is uploaded.
//!
//! Inputs read concurrently interleave their blocks at the packer, which
//! keeps one open file entry per input; the manifest lists files in input
//! order. A stream input that breaks is opened again and read from the start
//! (its entry is reset; chunks already packed are simply found again), up to
//! its number of attempts; then the run fails, or, when failures are
//! allowed, the input is left out and reported.
//! Memory is bounded by the channel depth, the block size and the packs in
//! flight, whatever the input size.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use cairn_chunk::{Block, BlockReader, Chunker, MemberKind};
use cairn_index::ChunkIndex;
use cairn_model::{
    ends_chunk_list, ChunkId, FileEntry, IndexFile, IndexGroup, IndexId, PackId, RepoConfig,
    Requests, Snapshot, SnapshotId, SnapshotTotals, INLINE_CHUNKS,
};
use cairn_pack::PackWriter;
use cairn_store::{keys, RepoStore};
use rayon::prelude::*;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repository::compress_json;
use crate::repository::Repository;

/// Bounds on the bytes per piece when a block's boundaries are found in
/// parallel. A block is split into one piece per worker thread, within these
/// bounds: every piece boundary costs a chunk or two scanned twice (the
/// chains re-synchronise there), so pieces are no smaller than the pool
/// needs (on 2 cores, 4 MiB pieces re-back up ~8 % faster than 1 MiB ones).
const CHUNK_PIECE_MIN: usize = 1024 * 1024;
const CHUNK_PIECE_MAX: usize = 4 * 1024 * 1024;

/// Bytes per parallel chunking piece for `block_size` blocks on `threads`.
fn chunk_piece(block_size: usize, threads: usize) -> usize {
    (block_size / threads.max(1)).clamp(CHUNK_PIECE_MIN, CHUNK_PIECE_MAX)
}

/// Default packs uploaded at once to an object store: enough to hide request
/// latency.
pub const OBJECT_STORE_UPLOADS: usize = 4;

/// Default packs written at once to a local directory: each write already
/// keeps the device busy with two requests, and every pack in flight holds a
/// pack-sized buffer, so more only costs memory.
pub const LOCAL_UPLOADS: usize = 3;

/// Pack buffers kept for reuse (beyond them, buffers are freed).
const FREE_PACK_BUFFERS: usize = 2;

/// Room a pack buffer needs: the target size, one more chunk, the trailer.
fn pack_capacity(config: &RepoConfig) -> usize {
    let pack = usize::try_from(config.pack_size).unwrap_or(usize::MAX / 4);
    pack + 2 * config.chunker.max_size as usize + (1 << 20)
}

/// Backup settings. Defaults suit a 2–8 core machine.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Tags recorded in the manifest.
    pub tags: Vec<String>,
    /// Host name recorded in the manifest (default: this machine's).
    pub host: Option<String>,
    /// Set to stop the backup; uploaded data is kept and indexed.
    pub cancel: Arc<AtomicBool>,
    /// Packs uploaded at once; `None` (the default) chooses for the
    /// repository: [`OBJECT_STORE_UPLOADS`] for object stores,
    /// [`LOCAL_UPLOADS`] for a local directory.
    pub upload_concurrency: Option<usize>,
    /// Threads for hashing and compression (default: the number of cores).
    pub cpu_threads: usize,
    /// Bytes read per block (default 8 MiB: large enough to fan out hashing).
    pub block_size: usize,
    /// Read, chunk, look up and compress, but write nothing: the summary
    /// says what a real backup would add.
    pub dry_run: bool,
    /// The snapshot's time (default: now), to import older snapshot files
    /// with the time they were taken.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            host: None,
            cancel: Arc::new(AtomicBool::new(false)),
            upload_concurrency: None,
            cpu_threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            block_size: 8 * 1024 * 1024,
            dry_run: false,
            time: None,
        }
    }
}

/// The result of a backup (`backup --json` prints exactly this, the
/// totals at the top level).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupSummary {
    /// The new snapshot (in a dry run: the id it would have).
    #[serde(rename = "snapshot")]
    pub id: SnapshotId,
    /// Nothing was written.
    pub dry_run: bool,
    /// Its totals.
    #[serde(flatten)]
    pub totals: SnapshotTotals,
    /// Wall time of the whole backup.
    pub seconds: f64,
}

/// One input of a backup run, stored as one file of the snapshot.
pub struct Input {
    /// Path in the snapshot.
    pub name: String,
    /// Size when known in advance (for progress).
    pub size: Option<u64>,
    /// Unix mode bits recorded for the file.
    pub mode: u32,
    /// Modification time recorded for the file (Unix seconds).
    pub mtime: i64,
    /// Where the bytes come from.
    pub source: InputSource,
}

/// Where an input's bytes come from.
pub enum InputSource {
    /// A local file.
    File(PathBuf),
    /// Standard input.
    Stdin,
    /// Opened (and re-opened after a failure) by its owner.
    Stream(Arc<dyn StreamInput>),
}

/// An input that can be opened more than once, read from the start each
/// time: a shard snapshot streamed from a Qdrant node.
pub trait StreamInput: Send + Sync {
    /// Opens attempt `attempt` (from 1). `stop` is set when the run is
    /// stopping; a reader blocked on the network should give up then.
    fn open(&self, attempt: u32, stop: &Stop) -> Result<Box<dyn Read + Send>>;
    /// Attempts allowed.
    fn attempts(&self) -> u32;
    /// What the input is, for errors ("collection docs, shard 2").
    fn describe(&self) -> String;
    /// What ends the file after the stream just read to its end: chunks
    /// the repository already holds, then bytes (`None`: nothing). Called
    /// once per attempt whose stream ended well; an error fails the
    /// attempt as a broken stream does.
    ///
    /// # Errors
    /// Why the file cannot be completed this way.
    fn tail(&self) -> Result<Option<Tail>> {
        Ok(None)
    }
    /// Record sizes of vector data in the stream just opened whose vector
    /// storage configs it does not carry (directory, bytes per record), so
    /// that it is chunked as the complete tar would be.
    fn tar_records(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
}

/// The end of a stream input's file (see [`StreamInput::tail`]).
#[derive(Debug, Default)]
pub struct Tail {
    /// Chunks already stored, in file order.
    pub known: Vec<ChunkId>,
    /// Every pack holding them, as the chunk index located them.
    pub packs: Vec<PackId>,
    /// Their raw length in all.
    pub known_bytes: u64,
    /// Bytes after them, chunked and stored as any input's.
    pub after: Vec<u8>,
}

/// The stop flags a reader checks: the caller's (Ctrl-C) and the run's own
/// (another input failed).
#[derive(Clone, Default)]
pub struct Stop {
    user: Arc<AtomicBool>,
    run: Arc<AtomicBool>,
}

impl Stop {
    /// True when the run is stopping.
    pub fn is_set(&self) -> bool {
        self.user.load(Ordering::Relaxed) || self.run.load(Ordering::Relaxed)
    }
}

/// How reading one input went.
#[derive(Debug, Clone, Default)]
pub struct InputOutcome {
    /// When its successful (or last) attempt started.
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    /// When it ended.
    pub finished: Option<chrono::DateTime<chrono::Utc>>,
    /// Bytes of the attempt that succeeded.
    pub bytes: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Why the input failed (failed inputs only).
    pub error: Option<String>,
}

/// How a run reads its inputs.
#[derive(Debug, Clone, Copy)]
pub struct RunShape {
    /// Inputs read at once.
    pub parallel: usize,
    /// A failed input is left out and reported instead of failing the run.
    pub allow_failures: bool,
}

impl RunShape {
    /// One input at a time; any failure fails the run.
    pub const SEQUENTIAL: Self = Self {
        parallel: 1,
        allow_failures: false,
    };
}

/// What a run produced: one entry per input, in input order (`None` for
/// inputs that failed), how each went, and the totals.
pub struct RunResult {
    /// The files, in input order (`None` for inputs that failed).
    pub files: Vec<Option<FileEntry>>,
    /// How each input went.
    pub outcomes: Vec<InputOutcome>,
    /// Totals of the run.
    pub totals: SnapshotTotals,
    /// What committing the run's manifest needs.
    pub commit: Commit,
}

/// What the packer produced.
struct Packed {
    files: Vec<Option<FileEntry>>,
    outcomes: Vec<InputOutcome>,
    totals: SnapshotTotals,
    referenced: HashSet<PackId>,
    pack_sizes: Vec<u64>,
}

/// A run's lease and what its manifest will rely on (opaque: hand it to
/// [`Repository::commit_snapshot`]).
pub struct Commit {
    /// The repository as the run used it: its requests are counted.
    repo: Repository,
    counts: Arc<cairn_store::counting::RequestCounts>,
    /// `None` for a dry run.
    lease: Option<crate::lease::HeldLease>,
    index: Arc<ChunkIndex>,
    /// Packs holding chunks the run deduplicated against.
    referenced: HashSet<PackId>,
    /// Sizes of the packs written (or, dry, that would be).
    pack_sizes: Vec<u64>,
}

enum Item {
    Start(usize),
    /// A block of an input, its chunks hashed.
    Block(usize, Block),
    /// Chunks the repository holds that continue an input (its tail's
    /// bytes are pumped after this).
    Known(usize, Tail),
    /// The input is read again from the start.
    Restart(usize),
    Done(usize, InputOutcome),
    Failed(usize, InputOutcome),
}

/// What reader threads share.
struct Readers<'a> {
    inputs: &'a [Input],
    next: AtomicUsize,
    chunker: &'a Chunker,
    pool: &'a Arc<rayon::ThreadPool>,
    block_size: usize,
    stop: Stop,
    allow_failures: bool,
    /// How chunk ids are computed.
    ids: cairn_model::ChunkHasher,
}

/// A reader thread's end of the channel to the packer. Each thread owns its
/// sender, so the packer sees the channel close when every reader is gone,
/// however it ended.
struct Reader<'r, 'a> {
    shared: &'r Readers<'a>,
    tx: mpsc::SyncSender<Result<Item>>,
}

impl<'a> std::ops::Deref for Reader<'_, 'a> {
    type Target = Readers<'a>;
    fn deref(&self) -> &Readers<'a> {
        self.shared
    }
}

/// Pause between attempts of a stream input.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl Readers<'_> {
    fn path_of(&self, i: usize) -> PathBuf {
        match &self.inputs[i].source {
            InputSource::File(p) => p.clone(),
            InputSource::Stdin => PathBuf::from("<stdin>"),
            InputSource::Stream(s) => PathBuf::from(s.describe()),
        }
    }
}

impl Reader<'_, '_> {
    /// Takes inputs until none are left; runs on each reader thread.
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.inputs.len() {
                return;
            }
            if self.stop.is_set() {
                let _ = self.tx.send(Err(Error::Interrupted));
                return;
            }
            if !self.read_input(i) {
                return;
            }
        }
    }

    fn open(&self, i: usize, attempt: u32) -> Result<Box<dyn Read + Send>> {
        match &self.inputs[i].source {
            InputSource::Stdin => Ok(Box::new(std::io::stdin())),
            InputSource::File(p) => File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|e| Error::io("cannot open", p, e)),
            InputSource::Stream(s) => s.open(attempt, &self.stop),
        }
    }

    /// Reads input `i` (again from the start after a failure, while attempts
    /// remain). False when the run should stop.
    fn read_input(&self, i: usize) -> bool {
        let attempts = match &self.inputs[i].source {
            InputSource::Stream(s) => s.attempts().max(1),
            _ => 1,
        };
        let mut outcome = InputOutcome {
            started: Some(chrono::Utc::now()),
            ..InputOutcome::default()
        };
        let mut started = false;
        let mut last_err = None;
        for attempt in 1..=attempts {
            outcome.attempts = attempt;
            if attempt > 1 {
                if self.stop.is_set() {
                    break;
                }
                std::thread::sleep(RETRY_PAUSE);
                tracing::warn!(input = %self.path_of(i).display(), attempt, error = %last_err.as_ref().map(ToString::to_string).unwrap_or_default(), "reading again from the start");
            }
            let read = self.open(i, attempt).and_then(|reader| {
                let msg = if started {
                    Item::Restart(i)
                } else {
                    Item::Start(i)
                };
                started = true;
                self.tx.send(Ok(msg)).map_err(|_| Error::Interrupted)?;
                let records = match &self.inputs[i].source {
                    InputSource::Stream(s) => s.tar_records(),
                    _ => Vec::new(),
                };
                let bytes = self.pump(i, reader, records)?;
                if let InputSource::Stream(s) = &self.inputs[i].source {
                    if let Some(mut tail) = s.tail()? {
                        let after = std::mem::take(&mut tail.after);
                        self.tx
                            .send(Ok(Item::Known(i, tail)))
                            .map_err(|_| Error::Interrupted)?;
                        if !after.is_empty() {
                            self.pump(i, Box::new(std::io::Cursor::new(after)), Vec::new())?;
                        }
                    }
                }
                Ok(bytes)
            });
            match read {
                Ok(bytes) => {
                    outcome.bytes = bytes;
                    outcome.finished = Some(chrono::Utc::now());
                    return self.tx.send(Ok(Item::Done(i, outcome))).is_ok();
                }
                Err(Error::Interrupted) => {
                    let _ = self.tx.send(Err(Error::Interrupted));
                    return false;
                }
                // Stopping (Ctrl-C, or another input failed): not this input's fault.
                Err(_) if self.stop.is_set() => {
                    let _ = self.tx.send(Err(Error::Interrupted));
                    return false;
                }
                Err(e) => {
                    let again = e.is_worth_reading_again();
                    last_err = Some(e);
                    if !again {
                        break;
                    }
                }
            }
        }
        let err = last_err.unwrap_or(Error::Interrupted);
        if self.allow_failures && !self.stop.is_set() {
            outcome.error = Some(err.to_string());
            outcome.finished = Some(chrono::Utc::now());
            tracing::warn!(input = %self.path_of(i).display(), error = %err, "left out of the backup");
            return self.tx.send(Ok(Item::Failed(i, outcome))).is_ok();
        }
        let _ = self.tx.send(Err(err));
        false
    }

    /// Reads one opened input to its end, its tar's vector record sizes
    /// known beforehand as `records` says; returns its length.
    fn pump(
        &self,
        i: usize,
        reader: Box<dyn Read + Send>,
        records: Vec<(String, u32)>,
    ) -> Result<u64> {
        let mut blocks = BlockReader::new(reader, self.chunker.clone(), self.block_size)
            .tar_aware(self.chunker.params().tar_aware)
            .tar_records(records)
            .parallel(
                chunk_piece(self.block_size, self.pool.current_num_threads()),
                Some(Arc::clone(self.pool)),
            )
            .hashed(true)
            .id_hasher(self.ids);
        let mut bytes = 0u64;
        loop {
            if self.stop.is_set() {
                return Err(Error::Interrupted);
            }
            match blocks.next_block() {
                Ok(Some(b)) => {
                    bytes += b.len() as u64;
                    self.tx
                        .send(Ok(Item::Block(i, b)))
                        .map_err(|_| Error::Interrupted)?;
                }
                Ok(None) => return Ok(bytes),
                Err(e) => {
                    return Err(match &self.inputs[i].source {
                        InputSource::Stream(s) => Error::Source {
                            what: s.describe(),
                            reason: e.to_string(),
                        },
                        _ => Error::io("cannot read", self.path_of(i), e),
                    })
                }
            }
        }
    }
}

/// An upload's index file name and group, and the pack's buffer for reuse.
type Uploaded = Result<(IndexId, IndexGroup, Vec<u8>)>;

struct Packer<'a> {
    repo: &'a Repository,
    index: &'a ChunkIndex,
    pool: &'a rayon::ThreadPool,
    handle: Handle,
    uploads: Arc<Semaphore>,
    done_tx: mpsc::Sender<Uploaded>,
    done_rx: mpsc::Receiver<Uploaded>,
    pending: usize,
    in_flight: HashSet<ChunkId>,
    writer: PackWriter,
    /// Buffers of uploaded packs, for the next packs.
    free_buffers: Vec<Vec<u8>>,
    totals: SnapshotTotals,
    /// Packs holding chunks this run deduplicated against.
    referenced: HashSet<PackId>,
    /// Ids of packs a prune is deleting: new packs must not take them.
    condemned: Arc<HashSet<PackId>>,
    /// Pack nothing; count what would be written.
    dry_run: bool,
    /// Sizes of the packs written (or, dry, that would be).
    pack_sizes: Vec<u64>,
}

impl Packer<'_> {
    fn add_block(&mut self, block: &mut Block, file: &mut FileEntry) -> Result<()> {
        let ids = std::mem::take(&mut block.ids);
        let chunks: Vec<&[u8]> = block.chunks().collect();
        self.record_uploads(false)?;
        let mut seen = HashSet::new();
        let candidates: Vec<usize> = (0..ids.len())
            .filter(|&i| !self.in_flight.contains(&ids[i]) && seen.insert(ids[i]))
            .collect();
        let lookup: Vec<ChunkId> = candidates.iter().map(|&i| ids[i]).collect();
        let hits = self.index.get_many(&lookup)?;
        let mut new = Vec::new();
        for (i, hit) in candidates.into_iter().zip(hits) {
            match hit {
                Some(loc) => {
                    self.referenced.insert(loc.pack);
                }
                None => new.push(i),
            }
        }
        let compression = self.repo.config.compression;
        // Vector data is judged once per block, on a sample of its new chunks:
        // float32 vectors rarely save the required share, and trying each
        // record-sized chunk costs more than the rest of the backup.
        let is_vector = |i: usize| block.kinds.get(i) == Some(&MemberKind::Vectors);
        let vectors: Vec<usize> = new.iter().copied().filter(|&i| is_vector(i)).collect();
        let compress_vectors = vectors.is_empty() || {
            let step = vectors.len().div_ceil(4);
            let sample: Vec<u8> = vectors
                .iter()
                .step_by(step)
                .flat_map(|&i| chunks[i].iter().take(4096).copied())
                .collect();
            cairn_pack::sample_worth_compressing(&sample, compression)
        };
        let compressed: Vec<Option<Vec<u8>>> = self.pool.install(|| {
            new.par_iter()
                .map(|&i| {
                    if !compress_vectors && is_vector(i) {
                        return None;
                    }
                    cairn_pack::compress(chunks[i], compression)
                })
                .collect()
        });
        for (&i, comp) in new.iter().zip(compressed) {
            self.push_blob(ids[i], chunks[i], comp.as_deref(), file)?;
        }
        self.totals.chunks += ids.len() as u64;
        file.size += block.len() as u64;
        for id in ids {
            file.chunks.push(id);
            if ends_chunk_list(&id, file.chunks.len()) {
                self.emit_list(file)?;
            }
        }
        Ok(())
    }

    /// Continues `file` with chunks the repository already holds, as a
    /// deduplicated block would: their packs are kept for the commit's
    /// check that they are still there, and none may be one a prune is
    /// deleting. The tail's packs were located in the chunk index before
    /// the run, so its chunks are not looked up again.
    fn add_known(&mut self, tail: Tail, file: &mut FileEntry) -> Result<()> {
        self.record_uploads(false)?;
        let Tail {
            known: ids,
            packs,
            known_bytes: bytes,
            after: _,
        } = tail;
        if let (Some(id), true) = (ids.first(), packs.is_empty()) {
            return Err(Error::MissingChunk {
                snapshot: "the previous backup this file continues".into(),
                file: file.path.clone(),
                chunk: id.to_hex(),
            });
        }
        if let Some(p) = packs.iter().find(|p| self.condemned.contains(*p)) {
            return Err(Error::PacksVanished {
                count: 1,
                packs: format!("{} (a prune is deleting it)", p.short()),
            });
        }
        self.referenced.extend(packs);
        self.totals.chunks += ids.len() as u64;
        file.size += bytes;
        for id in ids {
            file.chunks.push(id);
            if ends_chunk_list(&id, file.chunks.len()) {
                self.emit_list(file)?;
            }
        }
        Ok(())
    }

    /// Appends a new blob to the open pack, uploading the pack when full;
    /// `file` is credited with what it added.
    fn push_blob(
        &mut self,
        id: ChunkId,
        raw: &[u8],
        compressed: Option<&[u8]>,
        file: &mut FileEntry,
    ) -> Result<()> {
        let before = self.writer.len();
        self.writer.push(id, raw, compressed);
        self.in_flight.insert(id);
        let stored = (self.writer.len() - before) as u64;
        self.totals.new_chunks += 1;
        self.totals.new_bytes += raw.len() as u64;
        self.totals.new_stored_bytes += stored;
        file.new_bytes += raw.len() as u64;
        file.new_stored_bytes += stored;
        if self.writer.len() as u64 >= self.repo.config.pack_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Stores the file's pending chunk ids as one chunk-list blob.
    fn emit_list(&mut self, file: &mut FileEntry) -> Result<()> {
        if file.chunks.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = file.chunks.iter().flat_map(|id| id.0).collect();
        let id = self.repo.sealing.ids().id(&bytes);
        file.chunks.clear();
        file.chunk_lists.push(id);
        if self.in_flight.contains(&id) {
            return Ok(());
        }
        if let Some(loc) = self.index.get(&id)? {
            self.referenced.insert(loc.pack);
            return Ok(());
        }
        self.push_blob(id, &bytes, None, file)
    }

    /// Ends a file: small files keep their ids inline, larger ones in lists.
    fn finish_file(&mut self, file: &mut FileEntry) -> Result<()> {
        if !file.chunk_lists.is_empty() || file.chunks.len() > INLINE_CHUNKS {
            self.emit_list(file)?;
        }
        Ok(())
    }

    /// Finishes the open pack and hands it to an upload task.
    fn flush(&mut self) -> Result<()> {
        if self.writer.is_empty() {
            return Ok(());
        }
        if self.dry_run {
            // Counted as written; its chunks stay in flight, so repeats dedup.
            self.pack_sizes.push(self.writer.finished_len() as u64);
            self.totals.new_packs += 1;
            self.writer.clear();
            return Ok(());
        }
        self.pack_sizes.push(self.writer.finished_len() as u64);
        let capacity = self.pack_capacity();
        let buffer = self.free_buffers.pop().unwrap_or_default();
        let writer = std::mem::replace(
            &mut self.writer,
            PackWriter::with_buffer(buffer, capacity).sealed(&self.repo.sealing),
        );
        self.totals.new_packs += 1;
        let permit = self
            .handle
            .block_on(self.uploads.clone().acquire_owned())
            .expect("invariant: upload semaphore is never closed");
        let store: RepoStore = self.repo.store.clone();
        let tx = self.done_tx.clone();
        let avoid = Arc::clone(&self.condemned);
        self.pending += 1;
        self.handle.spawn(async move {
            // Trailer and hashes are computed here, off the packer thread,
            // which goes on with the next blocks meanwhile.
            let pack = tokio::task::spawn_blocking(move || writer.finish().avoiding(&avoid))
                .await
                .expect("invariant: finishing a pack does not panic");
            let result = store_pack(&store, pack).await;
            drop(permit);
            let _ = tx.send(result);
        });
        Ok(())
    }

    fn pack_capacity(&self) -> usize {
        pack_capacity(&self.repo.config)
    }

    /// Records finished uploads in the local index; with `wait`, waits for all.
    fn record_uploads(&mut self, wait: bool) -> Result<()> {
        while self.pending > 0 {
            let next = if wait {
                self.done_rx
                    .recv()
                    .expect("invariant: the packer holds a sender")
            } else {
                match self.done_rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                }
            };
            self.pending -= 1;
            let (name, group, buffer) = next?;
            if self.free_buffers.len() < FREE_PACK_BUFFERS {
                self.free_buffers.push(buffer);
            }
            self.index.ingest(&name, std::slice::from_ref(&group))?;
            for e in &group.entries {
                self.in_flight.remove(&e.id);
            }
        }
        Ok(())
    }

    /// Uploads the open pack and waits for every upload, recording each.
    /// On error, still waits for the other uploads so their index files land.
    fn finish(&mut self) -> Result<()> {
        let flushed = self.flush();
        let mut first_err = flushed.err();
        while self.pending > 0 {
            if let Err(e) = self.record_uploads(true) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The requests a backup that writes packs of `pack_sizes` makes: each pack
/// (in parts on an object store when large: initiate, parts, complete) and
/// its index file, the manifest, three lease writes and its delete, four
/// listings and one HEAD. Index files the cache must fetch are not included.
pub(crate) fn estimated_requests(pack_sizes: &[u64], local: bool) -> Requests {
    let part = 8 * 1024 * 1024u64;
    let pack_puts: u64 = pack_sizes
        .iter()
        .map(|&n| {
            if !local && n >= cairn_store::MULTIPART_THRESHOLD as u64 {
                n.div_ceil(part) + 2
            } else {
                1
            }
        })
        .sum();
    Requests {
        puts: pack_puts + pack_sizes.len() as u64 + 1 + 3,
        gets: 0,
        lists: 4,
        heads: 1,
        deletes: 1,
    }
}

/// Writes a finished pack, then the index file naming it: the write order
/// every reader relies on. Returns the index file's name, the pack's group
/// and its buffer (for reuse).
pub(crate) async fn store_pack(
    store: &RepoStore,
    pack: cairn_pack::FinishedPack,
) -> Result<(IndexId, IndexGroup, Vec<u8>)> {
    let group = IndexGroup {
        pack: pack.id,
        pack_length: pack.bytes.len() as u64,
        entries: pack.entries,
    };
    let mut file = IndexFile {
        supersedes: Vec::new(),
        groups: vec![group],
    };
    let encoded = file.encode();
    let name = IndexId::of(&encoded);
    let bytes = Bytes::from(pack.bytes);
    store
        .put_content_addressed(&keys::pack(&pack.id), bytes.clone())
        .await?;
    store
        .put_content_addressed(&keys::index(&name), Bytes::from(encoded))
        .await?;
    // The store holds no other reference now: the buffer comes back whole.
    Ok((name, file.groups.remove(0), Vec::from(bytes)))
}

impl Repository {
    /// Reads, chunks and stores `inputs` (see the module docs); writes no
    /// manifest. Every pack it wrote is indexed when it returns, also on
    /// error. The run holds a lease (an in-progress marker for prunes) from
    /// before it reads the index until its manifest is committed.
    ///
    /// # Errors
    /// An input that failed (unless the shape allows failures), storage
    /// and index errors, [`Error::Interrupted`].
    pub async fn run_inputs(
        &self,
        inputs: Vec<Input>,
        opts: BackupOptions,
        shape: RunShape,
        progress: Arc<dyn Progress>,
    ) -> Result<RunResult> {
        let (repo, counts) = self.counted();
        let lease = if opts.dry_run {
            None
        } else {
            Some(
                repo.acquire_lease(cairn_model::LeaseKind::Backup, None)
                    .await?,
            )
        };
        let run = async {
            let index = repo.chunk_index().await?;
            // Packs deleted behind Cairn's back, and packs a prune condemned,
            // must not be deduplicated against.
            let mut usable = repo.present_packs().await?;
            let condemned = Arc::new(repo.condemned_packs().await?);
            for p in condemned.iter() {
                usable.remove(p);
            }
            repo.forget_vanished(&index, &usable, false).await?;
            let worker = repo.clone();
            let handle = Handle::current();
            let index2 = Arc::clone(&index);
            let packed = tokio::task::spawn_blocking(move || {
                worker.pack_inputs(
                    &inputs, &index2, &opts, shape, &*progress, handle, condemned,
                )
            })
            .await
            .expect("invariant: backup thread does not panic")?;
            Ok::<_, Error>((packed, index))
        }
        .await;
        match run {
            Ok((packed, index)) => Ok(RunResult {
                files: packed.files,
                outcomes: packed.outcomes,
                totals: packed.totals,
                commit: Commit {
                    repo,
                    counts,
                    lease,
                    index,
                    referenced: packed.referenced,
                    pack_sizes: packed.pack_sizes,
                },
            }),
            Err(e) => {
                if let Some(l) = lease {
                    l.release().await;
                }
                Err(e)
            }
        }
    }

    /// This repository with its requests counted.
    pub(crate) fn counted(&self) -> (Repository, Arc<cairn_store::counting::RequestCounts>) {
        let counting = cairn_store::counting::CountingBackend::new(self.store.backend());
        let counts = counting.counts();
        let mut repo = self.clone();
        repo.store = self.store.clone().map_backend(|_| Arc::new(counting));
        (repo, counts)
    }

    /// Writes `snapshot`, last: after renewing the run's lease and checking
    /// that every pack it deduplicated against is still there, within half a
    /// lease of that renewal (see docs/format.md, garbage collection). The
    /// manifest records the requests the backup made. A dry run writes
    /// nothing and estimates the requests a real backup would make.
    ///
    /// # Errors
    /// [`Error::PacksVanished`], [`Error::LeaseLapsed`], storage errors.
    pub async fn commit_snapshot(
        &self,
        mut snapshot: Snapshot,
        commit: Commit,
    ) -> Result<BackupSummary> {
        let Commit {
            repo,
            counts,
            lease,
            index,
            referenced,
            pack_sizes,
        } = commit;
        let Some(lease) = lease else {
            snapshot.totals.requests = estimated_requests(&pack_sizes, repo.store.is_local());
            let (json, _) = compress_json(&snapshot);
            return Ok(BackupSummary {
                id: SnapshotId::of(&json),
                dry_run: true,
                totals: snapshot.totals,
                seconds: 0.0,
            });
        };
        let result = async {
            for _ in 0..3 {
                lease.renew().await?;
                let present = repo.present_packs().await?;
                let vanished: HashSet<PackId> = referenced
                    .iter()
                    .filter(|p| !present.contains(p))
                    .copied()
                    .collect();
                if !vanished.is_empty() {
                    repo.forget_vanished(&index, &present, true).await?;
                    let mut ids: Vec<String> = vanished.iter().map(PackId::short).collect();
                    ids.sort();
                    return Err(Error::PacksVanished {
                        count: vanished.len(),
                        packs: ids.join(", "),
                    });
                }
                if lease.is_fresh() {
                    let c = counts.get();
                    // The manifest's own PUT, and the lease's DELETE after it.
                    snapshot.totals.requests = Requests {
                        puts: c.puts + 1,
                        gets: c.gets,
                        lists: c.lists,
                        heads: c.heads,
                        deletes: c.deletes + 1,
                    };
                    return repo.write_snapshot(snapshot).await;
                }
                // Listing took half a lease: renew and look again.
            }
            Err(Error::Busy(
                "the repository answers too slowly to commit within the lease; try again".into(),
            ))
        }
        .await;
        lease.release().await;
        result
    }

    /// Every pack in the repository.
    pub(crate) async fn present_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self.pack_sizes().await?.into_keys().collect())
    }

    /// Every pack in the repository, with its size.
    pub(crate) async fn pack_sizes(&self) -> Result<std::collections::HashMap<PackId, u64>> {
        let listed = self.store.list(keys::PACK_DIR).await?;
        Ok(listed
            .into_iter()
            .filter_map(|l| l.name.parse::<PackId>().ok().map(|p| (p, l.size)))
            .collect())
    }

    /// Drops from the local index the chunks of packs it knows that are not
    /// in `present`; `quiet` when the caller reports them itself.
    async fn forget_vanished(
        &self,
        index: &Arc<ChunkIndex>,
        present: &HashSet<PackId>,
        quiet: bool,
    ) -> Result<()> {
        let index = Arc::clone(index);
        let present = present.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let gone: HashSet<PackId> = index
                .packs()?
                .into_iter()
                .filter(|p| !present.contains(p))
                .collect();
            if gone.is_empty() {
                return Ok(());
            }
            let chunks = index.forget_packs(&gone)?;
            if !quiet {
                tracing::warn!(
                    packs = gone.len(),
                    chunks,
                    "packs listed in index files are missing from the repository; their chunks will be stored again (cairn check names the snapshots that need them)"
                );
            }
            Ok(())
        })
        .await
        .expect("invariant: index scan does not panic")
    }

    pub(crate) async fn write_snapshot(&self, snapshot: Snapshot) -> Result<BackupSummary> {
        let (json, packed) = compress_json(&snapshot);
        let id = SnapshotId::of(&json);
        // Last in the write order: every chunk it names is already indexed.
        self.store
            .put_new(&keys::snapshot(&id), Bytes::from(packed))
            .await?;
        Ok(BackupSummary {
            id,
            dry_run: false,
            totals: snapshot.totals,
            seconds: 0.0,
        })
    }

    /// Packs uploaded at once: `requested` (at least 1), or the repository's
    /// default.
    fn upload_concurrency(&self, requested: Option<usize>) -> usize {
        match requested {
            Some(n) => n.max(1),
            None if self.store.is_local() => LOCAL_UPLOADS,
            None => OBJECT_STORE_UPLOADS,
        }
    }

    #[allow(clippy::too_many_arguments)] // internal: the run's parts, passed once
    fn pack_inputs(
        &self,
        inputs: &[Input],
        index: &ChunkIndex,
        opts: &BackupOptions,
        shape: RunShape,
        progress: &dyn Progress,
        handle: Handle,
        condemned: Arc<HashSet<PackId>>,
    ) -> Result<Packed> {
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(opts.cpu_threads.max(1))
                .thread_name(|i| format!("cairn-cpu-{i}"))
                .build()
                .map_err(|e| Error::InvalidArgument(format!("cannot start worker threads: {e}")))?,
        );
        let (done_tx, done_rx) = mpsc::channel();
        let mut packer = Packer {
            repo: self,
            index,
            pool: &pool,
            handle,
            uploads: Arc::new(Semaphore::new(
                self.upload_concurrency(opts.upload_concurrency),
            )),
            done_tx,
            done_rx,
            pending: 0,
            in_flight: HashSet::new(),
            writer: PackWriter::with_buffer(Vec::new(), pack_capacity(&self.config))
                .sealed(&self.sealing),
            free_buffers: Vec::new(),
            totals: SnapshotTotals::default(),
            referenced: HashSet::new(),
            condemned,
            dry_run: opts.dry_run,
            pack_sizes: Vec::new(),
        };
        let total = inputs.iter().map(|i| i.size).sum::<Option<u64>>();
        progress.start("backup", total);
        let chunker = Chunker::new(self.config.chunker);
        let parallel = shape.parallel.clamp(1, inputs.len().max(1));
        let (tx, rx) = mpsc::sync_channel::<Result<Item>>(2 * parallel);
        let stop = Stop {
            user: Arc::clone(&opts.cancel),
            run: Arc::new(AtomicBool::new(false)),
        };
        let readers = Readers {
            inputs,
            next: AtomicUsize::new(0),
            chunker: &chunker,
            pool: &pool,
            block_size: opts.block_size,
            stop: stop.clone(),
            allow_failures: shape.allow_failures,
            ids: self.sealing.ids(),
        };
        let mut files: Vec<Option<FileEntry>> = (0..inputs.len()).map(|_| None).collect();
        let mut outcomes = vec![InputOutcome::default(); inputs.len()];
        let result = std::thread::scope(|s| {
            for _ in 0..parallel {
                let reader = Reader {
                    shared: &readers,
                    tx: tx.clone(),
                };
                s.spawn(move || reader.run());
            }
            drop(tx);
            let result = (|| -> Result<()> {
                let mut ended = 0usize;
                while ended < inputs.len() {
                    let Ok(item) = rx.recv() else { break };
                    match item? {
                        Item::Start(i) => {
                            files[i] = Some(FileEntry {
                                path: inputs[i].name.clone(),
                                size: 0,
                                mode: inputs[i].mode,
                                mtime: inputs[i].mtime,
                                chunks: Vec::new(),
                                chunk_lists: Vec::new(),
                                new_bytes: 0,
                                new_stored_bytes: 0,
                                damaged: None,
                            });
                        }
                        Item::Block(i, mut b) => {
                            let file = files[i]
                                .as_mut()
                                .expect("invariant: a block follows its Start");
                            packer.add_block(&mut b, file)?;
                            progress.advance(b.len() as u64);
                        }
                        Item::Known(i, tail) => {
                            let file = files[i]
                                .as_mut()
                                .expect("invariant: known chunks follow their Start");
                            let bytes = tail.known_bytes;
                            packer.add_known(tail, file)?;
                            progress.advance(bytes);
                        }
                        Item::Restart(i) => {
                            let file = files[i]
                                .as_mut()
                                .expect("invariant: a restart follows its Start");
                            file.size = 0;
                            file.chunks.clear();
                            file.chunk_lists.clear();
                        }
                        Item::Done(i, outcome) => {
                            let file = files[i]
                                .as_mut()
                                .expect("invariant: Done follows its Start");
                            packer.finish_file(file)?;
                            if let InputSource::Stream(s) = &inputs[i].source {
                                let secs = match (outcome.started, outcome.finished) {
                                    (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1e3,
                                    _ => 0.0,
                                };
                                progress.note(&format!(
                                    "{}: {:.1} MiB in {secs:.1}s",
                                    s.describe(),
                                    outcome.bytes as f64 / 1_048_576.0
                                ));
                            }
                            outcomes[i] = outcome;
                            ended += 1;
                        }
                        Item::Failed(i, outcome) => {
                            files[i] = None;
                            outcomes[i] = outcome;
                            ended += 1;
                        }
                    }
                }
                if ended < inputs.len() {
                    // The readers stopped without reporting every input.
                    return Err(Error::Interrupted);
                }
                Ok(())
            })();
            // Stop the readers (on error) and unblock any that wait to send.
            if result.is_err() {
                stop.run.store(true, Ordering::Relaxed);
            }
            drop(rx);
            result
        });
        // Whatever happened, finish uploading what was packed so it is reused next time.
        let finished = packer.finish();
        progress.finish();
        result?;
        finished?;
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let mut totals = std::mem::take(&mut packer.totals);
        let kept = files.iter().flatten();
        totals.files = kept.clone().count() as u64;
        totals.bytes = kept.map(|f| f.size).sum();
        Ok(Packed {
            files,
            outcomes,
            totals,
            referenced: std::mem::take(&mut packer.referenced),
            pack_sizes: std::mem::take(&mut packer.pack_sizes),
        })
    }
}
