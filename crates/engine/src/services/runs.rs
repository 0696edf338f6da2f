//! Sorting more records than memory holds: fixed-width records are sorted a
//! buffer at a time into runs on local disk (unnamed temporary files, gone
//! when closed, also after a crash) and merged back in order. Prune's mark
//! uses it so that its memory does not grow with the repository's chunks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Most runs merged at once; more are merged in levels first.
const FAN_IN: usize = 128;
/// Read buffer of each run while merging.
const READ_BUFFER: usize = 128 * 1024;

/// Collects `N`-byte records and yields them sorted (byte order).
pub(crate) struct Sorter<const N: usize> {
    dir: PathBuf,
    buf: Vec<[u8; N]>,
    cap: usize,
    dedup: bool,
    runs: Vec<File>,
    spilled: u64,
}

impl<const N: usize> Sorter<N> {
    /// A sorter holding at most `budget` bytes of records in memory before
    /// it writes a run under `dir`; `dedup` drops repeated records.
    pub(crate) fn new(dir: &Path, budget: usize, dedup: bool) -> Self {
        Self {
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            cap: (budget / N).max(16),
            dedup,
            runs: Vec::new(),
            spilled: 0,
        }
    }

    /// Adds one record.
    ///
    /// # Errors
    /// Writing a run to local disk.
    pub(crate) fn push(&mut self, record: [u8; N]) -> io::Result<()> {
        if self.buf.len() == self.buf.capacity() {
            // Grow by doubling, but never past the budget.
            let want = (self.buf.capacity() * 2).max(1024).min(self.cap);
            self.buf
                .reserve_exact(want.saturating_sub(self.buf.len()).max(1));
        }
        self.buf.push(record);
        if self.buf.len() >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    fn sort_buffer(&mut self) {
        self.buf.sort_unstable();
        if self.dedup {
            self.buf.dedup();
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        self.sort_buffer();
        let mut file = tempfile::tempfile_in(&self.dir)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut file);
            for r in &self.buf {
                w.write_all(r)?;
            }
            w.flush()?;
        }
        self.spilled += (self.buf.len() * N) as u64;
        file.rewind()?;
        self.runs.push(file);
        self.buf.clear();
        Ok(())
    }

    /// Every record pushed, in order.
    ///
    /// # Errors
    /// Writing or merging runs on local disk.
    pub(crate) fn finish(mut self) -> io::Result<Sorted<N>> {
        if self.runs.is_empty() {
            self.sort_buffer();
            let records = std::mem::take(&mut self.buf);
            return Ok(Sorted {
                dedup: self.dedup,
                last: None,
                spilled: 0,
                source: Source::Memory(records.into_iter()),
            });
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        // Too many runs for one merge: merge them in groups into longer runs.
        while self.runs.len() > FAN_IN {
            let runs = std::mem::take(&mut self.runs);
            let mut groups = Vec::new();
            let mut it = runs.into_iter().peekable();
            while it.peek().is_some() {
                groups.push(it.by_ref().take(FAN_IN).collect::<Vec<_>>());
            }
            for group in groups {
                let mut file = tempfile::tempfile_in(&self.dir)?;
                {
                    let mut w = BufWriter::with_capacity(1 << 20, &mut file);
                    for r in Merge::<N>::new(group, self.dedup)? {
                        w.write_all(&r?)?;
                    }
                    w.flush()?;
                }
                self.spilled += file.metadata()?.len();
                file.rewind()?;
                self.runs.push(file);
            }
        }
        Ok(Sorted {
            dedup: self.dedup,
            last: None,
            spilled: self.spilled,
            source: Source::Disk(Merge::new(std::mem::take(&mut self.runs), self.dedup)?),
        })
    }
}

/// Records in order, from memory or merged from runs.
pub(crate) struct Sorted<const N: usize> {
    dedup: bool,
    last: Option<[u8; N]>,
    /// Bytes written to local disk in all (runs and merge levels).
    spilled: u64,
    source: Source<N>,
}

impl<const N: usize> Sorted<N> {
    /// Bytes the sort wrote to local disk: every run, the last one and any
    /// merged in levels included.
    pub(crate) fn spilled_bytes(&self) -> u64 {
        self.spilled
    }
}

enum Source<const N: usize> {
    Memory(std::vec::IntoIter<[u8; N]>),
    Disk(Merge<N>),
}

impl<const N: usize> Iterator for Sorted<N> {
    type Item = io::Result<[u8; N]>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let r = match &mut self.source {
                Source::Memory(it) => it.next().map(Ok),
                Source::Disk(m) => m.next(),
            }?;
            match r {
                Ok(r) if self.dedup && self.last == Some(r) => continue,
                Ok(r) => {
                    self.last = Some(r);
                    return Some(Ok(r));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A k-way merge of sorted runs.
struct Merge<const N: usize> {
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<([u8; N], usize)>>,
    dedup: bool,
    last: Option<[u8; N]>,
}

impl<const N: usize> Merge<N> {
    fn new(runs: Vec<File>, dedup: bool) -> io::Result<Self> {
        let mut readers: Vec<BufReader<File>> = runs
            .into_iter()
            .map(|f| BufReader::with_capacity(READ_BUFFER, f))
            .collect();
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(rec) = read_record::<N>(r)? {
                heap.push(Reverse((rec, i)));
            }
        }
        Ok(Self {
            readers,
            heap,
            dedup,
            last: None,
        })
    }
}

fn read_record<const N: usize>(r: &mut impl Read) -> io::Result<Option<[u8; N]>> {
    let mut rec = [0u8; N];
    let mut filled = 0;
    while filled < N {
        match r.read(&mut rec[filled..])? {
            0 if filled == 0 => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a sort run on local disk ends in a partial record",
                ))
            }
            n => filled += n,
        }
    }
    Ok(Some(rec))
}

impl<const N: usize> Iterator for Merge<N> {
    type Item = io::Result<[u8; N]>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Reverse((rec, i)) = self.heap.pop()?;
            match read_record::<N>(&mut self.readers[i]) {
                Ok(Some(next)) => self.heap.push(Reverse((next, i))),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.dedup && self.last == Some(rec) {
                continue;
            }
            self.last = Some(rec);
            return Some(Ok(rec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted(records: &[[u8; 3]], budget: usize, dedup: bool) -> Vec<[u8; 3]> {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::<3>::new(dir.path(), budget, dedup);
        for r in records {
            s.push(*r).unwrap();
        }
        s.finish().unwrap().map(Result::unwrap).collect()
    }

    proptest! {
        /// Whatever the buffer (all in memory, many runs, more runs than
        /// one merge takes), the output is the input sorted.
        #[test]
        fn sorts_like_memory(records in proptest::collection::vec(any::<[u8; 3]>(), 0..3000),
                             budget in prop_oneof![Just(48usize), Just(300), Just(1 << 20)],
                             dedup: bool) {
            let mut expected = records.clone();
            expected.sort_unstable();
            if dedup {
                expected.dedup();
            }
            prop_assert_eq!(sorted(&records, budget, dedup), expected);
        }
    }

    #[test]
    fn more_runs_than_one_merge_takes() {
        // 16 records a run, 5,000 records: 313 runs, merged in two levels.
        let records: Vec<[u8; 3]> = (0..5000u32)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761) >> 8;
                [(x >> 16) as u8, (x >> 8) as u8, x as u8]
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::<3>::new(dir.path(), 48, false);
        for r in &records {
            s.push(*r).unwrap();
        }
        assert!(s.runs.len() > FAN_IN, "{} runs", s.runs.len());
        let sorted = s.finish().unwrap();
        // Every record written once to a run and once more by the level
        // that merged the 313 runs into 3.
        assert_eq!(sorted.spilled_bytes(), 2 * 5000 * 3);
        let out: Vec<_> = sorted.map(Result::unwrap).collect();
        let mut expected = records;
        expected.sort_unstable();
        assert_eq!(out, expected);
    }
}
