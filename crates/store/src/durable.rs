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

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Alignment of direct writes: buffer address, file offset and length.
const ALIGN: usize = 4096;

/// Bytes staged between direct writes (a multiple of [`ALIGN`]).
pub const STAGING: usize = 4 * 1024 * 1024;

/// A file written front to back, durable once [`DurableFile::finish`] returns.
#[derive(Debug)]
pub struct DurableFile {
    file: File,
    path: PathBuf,
    /// Staging buffer; the aligned region starts at `start`.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes already written to the file.
    written: u64,
    direct: bool,
}

impl DurableFile {
    /// Creates `path`, failing if it exists when `create_new`, truncating it
    /// otherwise.
    ///
    /// # Errors
    /// From opening the file.
    pub fn create(path: &Path, create_new: bool) -> io::Result<Self> {
        let mut opts = OpenOptions::new();
        opts.write(true);
        if create_new {
            opts.create_new(true);
        } else {
            opts.create(true).truncate(true);
        }
        let (file, direct) = open_direct(&opts, path)?;
        let (buf, start) = if direct {
            let buf = vec![0u8; STAGING + ALIGN];
            let start = buf.as_ptr().align_offset(ALIGN);
            (buf, start)
        } else {
            (Vec::new(), 0)
        };
        Ok(Self {
            file,
            path: path.to_path_buf(),
            buf,
            start,
            filled: 0,
            written: 0,
            direct,
        })
    }

    /// Whether writes bypass the page cache.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends `data`.
    ///
    /// # Errors
    /// From writing.
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        if !self.direct {
            self.file.write_all(data)?;
            self.written += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let n = data.len().min(STAGING - self.filled);
            let at = self.start + self.filled;
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == STAGING {
                self.write_staged(STAGING)?;
            }
        }
        Ok(())
    }

    /// Writes the first `len` staged bytes (a multiple of [`ALIGN`]) directly,
    /// switching to ordinary writes if the filesystem refuses.
    fn write_staged(&mut self, len: usize) -> io::Result<()> {
        let staged = &self.buf[self.start..self.start + len];
        match self.file.write_all(staged) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EINVAL) => {
                // Accepted at open but not for writing: continue without it.
                let mut file = OpenOptions::new().write(true).open(&self.path)?;
                file.set_len(self.written)?;
                io::Seek::seek(&mut file, io::SeekFrom::Start(self.written))?;
                file.write_all(staged)?;
                self.file = file;
                self.direct = false;
            }
            Err(e) => return Err(e),
        }
        self.written += len as u64;
        self.buf
            .copy_within(self.start + len..self.start + self.filled, self.start);
        self.filled -= len;
        if !self.direct && self.filled > 0 {
            let rest = &self.buf[self.start..self.start + self.filled];
            self.file.write_all(rest)?;
            self.written += self.filled as u64;
            self.filled = 0;
        }
        Ok(())
    }

    /// Writes what is staged and flushes the file to stable storage.
    /// Returns the file (for setting times) and its length.
    ///
    /// # Errors
    /// From writing or `fsync`.
    pub fn finish(mut self) -> io::Result<(File, u64)> {
        if self.direct && self.filled > 0 {
            let aligned = self.filled / ALIGN * ALIGN;
            if aligned > 0 {
                self.write_staged(aligned)?;
            }
            if self.filled > 0 {
                // The unaligned tail goes through the page cache.
                let mut tail = OpenOptions::new().write(true).open(&self.path)?;
                io::Seek::seek(&mut tail, io::SeekFrom::Start(self.written))?;
                tail.write_all(&self.buf[self.start..self.start + self.filled])?;
                self.written += self.filled as u64;
                self.filled = 0;
                tail.sync_all()?;
            }
        }
        self.file.sync_all()?;
        Ok((self.file, self.written))
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
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = DurableFile::create(&path, true).expect("create");
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
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").expect("write");
        let e = DurableFile::create(&path, true).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let mut f = DurableFile::create(&path, false).expect("truncate");
        f.write_all(b"new").expect("write");
        f.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }
}
