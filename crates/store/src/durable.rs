//! Durable sequential file writes that bypass the page cache where they can.
//!
//! Pack files and restored snapshots are large, written once and not read
//! back soon. Written through the page cache they cost a copy into freshly
//! allocated cache pages and then, at `fsync`, a second pass to write those
//! pages out; on a virtual machine the first part alone can cost more CPU than
//! hashing the same bytes. [`DurableFile`] stages bytes in an aligned buffer
//! and writes whole aligned blocks with `O_DIRECT` (Linux), so data goes from
//! the buffer to the device; the unaligned tail goes through the page cache.
//! [`DurableFile::finish`] always ends with `fsync`, so a finished file is on
//! stable storage either way.
//!
//! Where `O_DIRECT` is refused (tmpfs on older kernels, some FUSE and network
//! filesystems, other systems) the file is written normally; only speed
//! differs.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Alignment of direct writes: buffer address, file offset and length.
const ALIGN: usize = 4096;

/// Bytes staged between direct writes (a multiple of [`ALIGN`]).
pub const STAGING: usize = 4 * 1024 * 1024;

/// Files expected to be smaller than this are written through the page cache.
pub const DIRECT_MIN: u64 = 1024 * 1024;

/// An aligned staging buffer: the usable region starts at `start`.
#[derive(Debug)]
struct Staging {
    buf: Vec<u8>,
    start: usize,
}

/// Staging buffers of finished files, reused so that each file does not
/// fault in fresh memory (costly on virtual machines).
static FREE: std::sync::Mutex<Vec<Staging>> = std::sync::Mutex::new(Vec::new());

/// Staging buffers kept in [`FREE`].
const FREE_MAX: usize = 4;

impl Staging {
    fn new() -> Self {
        if let Some(s) = FREE.lock().ok().and_then(|mut f| f.pop()) {
            return s;
        }
        let buf = vec![0u8; STAGING + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Self { buf, start }
    }

    fn release(self) {
        if let Ok(mut free) = FREE.lock() {
            if free.len() < FREE_MAX {
                free.push(self);
            }
        }
    }

    fn region(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }
}

type InFlight = std::thread::JoinHandle<(Staging, io::Result<()>)>;

/// A file written front to back, durable once [`DurableFile::finish`] returns.
///
/// In direct mode full staging buffers are written by helper threads while
/// the next one fills: up to [`DurableFile::with_depth`] writes (default 1)
/// are in flight, so the device sees several requests at a time.
#[derive(Debug)]
pub struct DurableFile {
    file: Arc<File>,
    path: PathBuf,
    /// The buffer being filled (direct mode only) and its fill level.
    staging: Option<Staging>,
    filled: usize,
    /// A free buffer, kept after the first (inline) write.
    spare: Option<Staging>,
    /// Direct writes in flight, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Most direct writes in flight at once.
    depth: usize,
    /// Bytes handed to the file so far (the offset of the next staged byte).
    written: u64,
    direct: bool,
    /// Whether a direct write has succeeded (the first one runs inline so
    /// that a refusal can still fall back to ordinary writes).
    direct_proven: bool,
    /// Whether [`DurableFile::finish`] flushes to stable storage.
    sync: bool,
}

impl DurableFile {
    /// Creates `path`, failing if it exists when `create_new`, truncating it
    /// otherwise. `expected_len` (when known) keeps small files out of direct
    /// mode: below [`DIRECT_MIN`] they go through the page cache.
    ///
    /// # Errors
    /// From opening the file.
    pub fn create(path: &Path, create_new: bool, expected_len: Option<u64>) -> io::Result<Self> {
        let direct = expected_len.is_none_or(|n| n >= DIRECT_MIN);
        Self::open(path, create_new, direct, true)
    }

    /// Creates `path` for ordinary buffered writes that [`DurableFile::finish`]
    /// does not flush: the data may still be in the page cache when it
    /// returns. For output that can be written again (a restore), when the
    /// caller trades durability for speed.
    ///
    /// # Errors
    /// From opening the file.
    pub fn create_unsynced(path: &Path, create_new: bool) -> io::Result<Self> {
        Self::open(path, create_new, false, false)
    }

    /// Opens the file, with `O_DIRECT` when `try_direct` and the filesystem
    /// accepts it; `sync` says whether [`DurableFile::finish`] flushes.
    fn open(path: &Path, create_new: bool, try_direct: bool, sync: bool) -> io::Result<Self> {
        let mut opts = OpenOptions::new();
        opts.write(true);
        if create_new {
            opts.create_new(true);
        } else {
            opts.create(true).truncate(true);
        }
        let (file, direct) = if try_direct {
            open_direct(&opts, path)?
        } else {
            (opts.open(path)?, false)
        };
        Ok(Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            staging: direct.then(Staging::new),
            filled: 0,
            spare: None,
            in_flight: VecDeque::new(),
            depth: 1,
            written: 0,
            direct,
            direct_proven: false,
            sync,
        })
    }

    /// Allows up to `depth` direct writes in flight (at least 1), each
    /// holding a [`STAGING`]-sized buffer: deeper queues suit large files
    /// on devices that serve requests in parallel.
    #[must_use]
    pub fn with_depth(mut self, depth: usize) -> Self {
        self.depth = depth.max(1);
        self
    }

    /// Whether [`DurableFile::finish`] flushes the file to stable storage.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.sync
    }

    /// Whether writes bypass the page cache.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends `data`.
    ///
    /// # Errors
    /// From writing (possibly an earlier write that ran in the background).
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Some(staging) = self.staging.as_mut() else {
                self.file.write_all_at(data, self.written)?;
                self.written += data.len() as u64;
                return Ok(());
            };
            let n = data.len().min(STAGING - self.filled);
            let at = staging.start + self.filled;
            staging.buf[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == STAGING {
                self.write_full()?;
            }
        }
        Ok(())
    }

    /// Hands the full staging buffer to a direct write and continues in a
    /// free one.
    fn write_full(&mut self) -> io::Result<()> {
        let next = self.free_buffer()?;
        let full = self
            .staging
            .replace(next)
            .expect("invariant: direct mode stages");
        let offset = self.written;
        self.written += STAGING as u64;
        self.filled = 0;
        if !self.direct_proven {
            let result = self.file.write_all_at(full.region(STAGING), offset);
            self.spare = Some(full);
            return self.after_first_write(result, offset);
        }
        let file = Arc::clone(&self.file);
        self.in_flight.push_back(std::thread::spawn(move || {
            let result = file.write_all_at(full.region(STAGING), offset);
            (full, result)
        }));
        Ok(())
    }

    /// A buffer to fill next: with the queue full, the oldest write's once
    /// it is done; otherwise the spare one or a new one.
    fn free_buffer(&mut self) -> io::Result<Staging> {
        if self.in_flight.len() >= self.depth {
            if let Some(buf) = self.wait_oldest()? {
                return Ok(buf);
            }
        }
        Ok(self.spare.take().unwrap_or_else(Staging::new))
    }

    /// Waits for the oldest write in flight and returns its buffer.
    fn wait_oldest(&mut self) -> io::Result<Option<Staging>> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let (buf, result) = h.join().expect("invariant: a file write does not panic");
        result?;
        Ok(Some(buf))
    }

    /// Settles direct mode after the first direct write at `offset`: a
    /// refusal (EINVAL) switches to ordinary writes and writes the buffer
    /// again that way.
    fn after_first_write(&mut self, result: io::Result<()>, offset: u64) -> io::Result<()> {
        match result {
            Ok(()) => {
                self.direct_proven = true;
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(EINVAL) => {
                let file = OpenOptions::new().write(true).open(&self.path)?;
                let refused = self.spare.as_ref().expect("invariant: kept by write_full");
                file.write_all_at(refused.region(STAGING), offset)?;
                let pending = self.staging.take().expect("invariant: direct mode stages");
                file.write_all_at(pending.region(self.filled), self.written)?;
                self.written += self.filled as u64;
                self.filled = 0;
                self.file = Arc::new(file);
                self.direct = false;
                self.spare = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes what is staged and flushes the file to stable storage.
    /// Returns the file (for setting times) and its length.
    ///
    /// # Errors
    /// From writing or `fsync`.
    pub fn finish(mut self) -> io::Result<(File, u64)> {
        while let Some(free) = self.wait_oldest()? {
            free.release();
        }
        if let Some(free) = self.spare.take() {
            free.release();
        }
        if let Some(staging) = self.staging.take() {
            let aligned = self.filled / ALIGN * ALIGN;
            if aligned > 0 {
                self.file
                    .write_all_at(staging.region(aligned), self.written)?;
                self.written += aligned as u64;
            }
            let tail = &staging.region(self.filled)[aligned..];
            if !tail.is_empty() {
                // The unaligned tail goes through the page cache.
                let f = OpenOptions::new().write(true).open(&self.path)?;
                f.write_all_at(tail, self.written)?;
                self.written += tail.len() as u64;
                f.sync_all()?;
            }
            staging.release();
        }
        if self.sync {
            self.file.sync_all()?;
        }
        let file = Arc::try_unwrap(self.file).expect("invariant: no write in flight");
        Ok((file, self.written))
    }
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

/// Opens with `O_DIRECT` when the filesystem accepts it.
#[cfg(target_os = "linux")]
fn open_direct(opts: &OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut direct = opts.clone();
    direct.custom_flags(libc::O_DIRECT);
    match direct.open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((opts.open(path)?, false)),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(opts: &OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    Ok((opts.open(path)?, false))
}

/// Starts writing `len` bytes of `file` from `offset` back to the device
/// without waiting for them (Linux `sync_file_range`; elsewhere nothing).
/// A later `fsync` then has less left to wait for: a restore calls this on
/// each finished stretch of a file, so the device writes while the rest is
/// still being read and decoded.
///
/// # Errors
/// From `sync_file_range`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: a plain system call on an open descriptor; no memory is shared.
    let r = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// See the Linux version: elsewhere the final `fsync` does all the work.
///
/// # Errors
/// Never.
#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// Flushes a directory's entries (a new or renamed file's name) to stable
/// storage.
///
/// # Errors
/// From opening or syncing the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(sizes: &[usize]) {
        for depth in [1, 3] {
            round_trip_at_depth(sizes, depth);
        }
    }

    fn round_trip_at_depth(sizes: &[usize], depth: usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = DurableFile::create(&path, true, None)
            .expect("create")
            .with_depth(depth);
        let mut expected = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let piece: Vec<u8> = (0..n).map(|j| (i * 31 + j * 7) as u8).collect();
            f.write_all(&piece).expect("write");
            expected.extend_from_slice(&piece);
        }
        let (_, len) = f.finish().expect("finish");
        assert_eq!(len, expected.len() as u64);
        assert_eq!(std::fs::read(&path).expect("read back"), expected);
    }

    #[test]
    fn writes_any_mix_of_sizes_byte_for_byte() {
        round_trip(&[]);
        round_trip(&[1]);
        round_trip(&[ALIGN]);
        round_trip(&[STAGING]);
        round_trip(&[STAGING + 1, 3, ALIGN - 1]);
        round_trip(&[100_000, STAGING * 2 + 12_345, 7, 65_536]);
        round_trip(&[STAGING * 5 + 1, STAGING * 3, ALIGN + 1]);
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").expect("write");
        let e = DurableFile::create(&path, true, None).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let mut f = DurableFile::create(&path, false, Some(3)).expect("truncate");
        f.write_all(b"new").expect("write");
        f.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mut f = DurableFile::create_unsynced(&path, false).expect("truncate");
        assert!(!f.is_direct());
        f.write_all(&[7u8; STAGING + 3]).expect("write");
        let (_, len) = f.finish().expect("finish");
        assert_eq!(len, STAGING as u64 + 3);
        assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; STAGING + 3]);
    }
}
