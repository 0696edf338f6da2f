//! What the snapshots need, joined with where the index says chunks are,
//! in memory that does not grow with the repository's chunks: prune's mark
//! and sweep share it.
//!
//! Every index entry becomes a 44-byte record (chunk id, pack, entry,
//! length) and every chunk a snapshot needs a 32-byte one; both are sorted
//! on local disk ([`super::runs`]) and merged in chunk id order. In memory
//! stay one row per pack, one line per index file, the chunk lists'
//! locations (about one list per thousand chunks), a bit per index entry for
//! whoever keeps one, and the sort buffers. The join is exact: chunks are
//! compared by their whole id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use cairn_model::{ChunkId, IndexFile, IndexGroup, IndexId, PackId};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::read::ChunkLists;
use crate::repository::{Repository, SnapshotInfo};
use crate::services::runs::{Sorted, Sorter};
use crate::services::view::Locations;

/// Bytes of records held in memory by each sorter before a run is written.
pub(crate) const DEFAULT_SORT_BUFFER: usize = 256 * 1024 * 1024;
/// Chunk lists read per batch (~1,000 ids each, at most 4,096).
const LIST_BATCH: usize = 1024;
/// Index files read at once during a scan.
const SCAN_CONCURRENCY: usize = 8;

const ENTRY: usize = 44;

/// One pack as the index names it.
#[derive(Debug, Clone)]
pub(crate) struct PackRow {
    pub(crate) id: PackId,
    /// Stored bytes of its blobs.
    pub(crate) blob_bytes: u64,
    /// Where its entries' bits start in a [`Bits`].
    pub(crate) first_bit: u64,
}

/// Where a needed chunk is: one index entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    /// Into [`IndexScan::packs`].
    pub(crate) pack: u32,
    /// Into the pack's group.
    pub(crate) entry: u32,
    /// Stored length.
    pub(crate) length: u32,
}

/// Every readable index file, scanned once.
pub(crate) struct IndexScan {
    pub(crate) packs: Vec<PackRow>,
    pub(crate) ordinal: HashMap<PackId, u32>,
    /// Index file → the packs it names.
    pub(crate) files: BTreeMap<IndexId, Vec<u32>>,
    /// Where each wanted chunk list is (every copy).
    pub(crate) lists: Locations,
    /// Every entry, by chunk id then pack.
    entries: Sorted<ENTRY>,
    /// Entries in all.
    pub(crate) total_entries: u64,
    /// Bytes the scan wrote to local disk.
    pub(crate) spilled: u64,
    tmp: std::path::PathBuf,
}

/// One bit per index entry.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(n: u64) -> Self {
        Self(vec![
            0;
            usize::try_from(n.div_ceil(64))
                .expect("bitset fits in memory")
        ])
    }
    pub(crate) fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
    pub(crate) fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
}

/// What a set of snapshots needs: chunk ids sorted on disk, and the chunk
/// lists that could not be read.
pub(crate) struct Needed {
    ids: Sorted<32>,
    /// Chunk list → why it cannot be read.
    pub(crate) unreadable_lists: HashMap<ChunkId, String>,
    pub(crate) spilled: u64,
}

fn io_error(tmp: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io("sorting prune's records on local disk in", tmp, e)
}

impl Repository {
    /// Scans every readable index file (damaged ones are named and
    /// skipped), noting where the chunk lists in `lists` are.
    pub(crate) async fn scan_index(
        &self,
        lists: &HashSet<ChunkId>,
        tmp: &Path,
        sort_buffer: usize,
    ) -> Result<IndexScan> {
        let listed = self.list_index().await?;
        let mut loaded = futures::stream::iter(listed)
            .map(|(id, _)| async move { (id, self.load_index_file(&id).await) })
            .buffered(SCAN_CONCURRENCY);
        let mut sorter = Sorter::<ENTRY>::new(tmp, sort_buffer, false);
        let mut packs: Vec<PackRow> = Vec::new();
        let mut ordinal: HashMap<PackId, u32> = HashMap::new();
        let mut files = BTreeMap::new();
        let mut locations = Locations::new();
        let mut total: u64 = 0;
        while let Some((name, r)) = loaded.next().await {
            let Some(file) = crate::services::view::skip_damaged_index(name, r)? else {
                continue;
            };
            let mut named = Vec::with_capacity(file.groups.len());
            for g in file.groups {
                if let Some(&o) = ordinal.get(&g.pack) {
                    // A pack named by two files has the same entries in
                    // both (its trailer's): the first copy stands for both.
                    named.push(o);
                    continue;
                }
                let o = u32::try_from(packs.len()).expect("fewer than 2^32 packs");
                ordinal.insert(g.pack, o);
                named.push(o);
                let n = u32::try_from(g.entries.len()).expect("fewer than 2^32 entries a pack");
                packs.push(PackRow {
                    id: g.pack,
                    blob_bytes: g.entries.iter().map(|e| u64::from(e.length)).sum(),
                    first_bit: total,
                });
                total += u64::from(n);
                for (i, e) in g.entries.iter().enumerate() {
                    let mut rec = [0u8; ENTRY];
                    rec[..32].copy_from_slice(e.id.as_bytes());
                    rec[32..36].copy_from_slice(&o.to_be_bytes());
                    rec[36..40].copy_from_slice(&(i as u32).to_be_bytes());
                    rec[40..44].copy_from_slice(&e.length.to_be_bytes());
                    sorter.push(rec).map_err(io_error(tmp))?;
                    if lists.contains(&e.id) {
                        locations.entry(e.id).or_default().push((g.pack, *e));
                    }
                }
            }
            files.insert(name, named);
        }
        let entries = sorter.finish().map_err(io_error(tmp))?;
        Ok(IndexScan {
            packs,
            ordinal,
            files,
            lists: locations,
            spilled: entries.spilled_bytes(),
            entries,
            total_entries: total,
            tmp: tmp.to_path_buf(),
        })
    }

    /// Every chunk `snapshots` need (chunk lists, their members, inline
    /// chunks), read list batch by list batch into a sorter.
    pub(crate) async fn needed(
        &self,
        snapshots: &[SnapshotInfo],
        lists: &Locations,
        tmp: &Path,
        sort_buffer: usize,
    ) -> Result<Needed> {
        let mut sorter = Sorter::<32>::new(tmp, sort_buffer, true);
        let mut all_lists: Vec<ChunkId> = Vec::new();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        for info in snapshots {
            for file in &info.snapshot.files {
                for l in &file.chunk_lists {
                    if seen.insert(*l) {
                        all_lists.push(*l);
                    }
                }
                for c in &file.chunks {
                    sorter.push(c.0).map_err(io_error(tmp))?;
                }
            }
        }
        drop(seen);
        let mut unreadable = HashMap::new();
        let mut out = ChunkLists::new();
        for batch in all_lists.chunks(LIST_BATCH) {
            self.read_lists(lists, batch.iter().copied(), &mut out)
                .await;
            for (id, ids) in out.drain() {
                sorter.push(id.0).map_err(io_error(tmp))?;
                match ids {
                    Ok(ids) => {
                        for c in ids {
                            sorter.push(c.0).map_err(io_error(tmp))?;
                        }
                    }
                    Err(why) => {
                        unreadable.insert(id, why);
                    }
                }
            }
        }
        let ids = sorter.finish().map_err(io_error(tmp))?;
        Ok(Needed {
            spilled: ids.spilled_bytes(),
            ids,
            unreadable_lists: unreadable,
        })
    }
}

impl IndexScan {
    /// Walks the needed chunks in id order, each with every index entry
    /// that holds it (none when no index file names it).
    pub(crate) fn join(
        &mut self,
        needed: &mut Needed,
        mut each: impl FnMut(&[PackRow], ChunkId, &[Place]),
    ) -> Result<()> {
        let packs = &self.packs;
        let entries = &mut self.entries;
        let tmp = self.tmp.clone();
        let tmp = tmp.as_path();
        let mut pending: Option<[u8; ENTRY]> = None;
        let mut places: Vec<Place> = Vec::new();
        for id in needed.ids.by_ref() {
            let id = id.map_err(io_error(tmp))?;
            places.clear();
            loop {
                let rec = match pending.take() {
                    Some(r) => r,
                    None => match entries.next() {
                        Some(r) => r.map_err(io_error(tmp))?,
                        None => break,
                    },
                };
                match rec[..32].cmp(&id[..]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => places.push(Place {
                        pack: u32::from_be_bytes(rec[32..36].try_into().expect("4 bytes")),
                        entry: u32::from_be_bytes(rec[36..40].try_into().expect("4 bytes")),
                        length: u32::from_be_bytes(rec[40..44].try_into().expect("4 bytes")),
                    }),
                    std::cmp::Ordering::Greater => {
                        pending = Some(rec);
                        break;
                    }
                }
            }
            each(packs, ChunkId(id), &places);
        }
        Ok(())
    }

    /// The index files naming any of `wanted` packs, read again, in index
    /// file order; [`Self::pick`] takes the wanted groups out of each.
    pub(crate) fn files_naming<'a>(
        &self,
        repo: &'a Repository,
        wanted: &HashSet<u32>,
    ) -> impl futures::Stream<Item = Result<IndexFile>> + 'a {
        let names: Vec<IndexId> = self
            .files
            .iter()
            .filter(|(_, packs)| packs.iter().any(|p| wanted.contains(p)))
            .map(|(n, _)| *n)
            .collect();
        futures::stream::iter(names)
            .map(move |name| async move {
                repo.load_index_file(&name).await.map_err(|e| match e {
                    Error::Store(cairn_store::Error::NotFound { .. }) => Error::Malformed {
                        what: format!("index file {name}"),
                        reason: "deleted while prune was reading the index; run prune again".into(),
                    },
                    e => e,
                })
            })
            .buffered(SCAN_CONCURRENCY)
    }

    /// The groups of `file` for `wanted` packs not in `done` yet (added).
    pub(crate) fn pick(
        &self,
        file: IndexFile,
        wanted: &HashSet<u32>,
        done: &mut HashSet<u32>,
    ) -> Vec<(u32, IndexGroup)> {
        file.groups
            .into_iter()
            .filter_map(|g| {
                let o = *self.ordinal.get(&g.pack)?;
                (wanted.contains(&o) && done.insert(o)).then_some((o, g))
            })
            .collect()
    }
}

/// Index files written a batch of groups at a time, each within the size a
/// reader accepts. The last records the files they supersede, so that no
/// reader drops a superseded file before every replacement is written.
pub(crate) struct IndexBatch {
    supersedes: Option<Vec<IndexId>>,
    /// Record `supersedes` in every file, not only the last.
    every: bool,
    groups: Vec<IndexGroup>,
    entries: usize,
}

/// Groups in one index file written by prune.
const BATCH_GROUPS: usize = 4096;
/// Entries in one index file written by prune (49 bytes each: ~49 MiB,
/// well within the largest index file a reader accepts).
const BATCH_ENTRIES: usize = 1 << 20;

impl IndexBatch {
    /// Files whose last one supersedes `supersedes` (so that a crash
    /// before it leaves the old files in force).
    pub(crate) fn new(supersedes: Vec<IndexId>) -> Self {
        Self {
            supersedes: Some(supersedes),
            every: false,
            groups: Vec::new(),
            entries: 0,
        }
    }

    /// Files that each supersede `supersedes`: for files already superseded
    /// by others, so that no new file can be one of them byte for byte.
    pub(crate) fn each_superseding(supersedes: Vec<IndexId>) -> Self {
        Self {
            every: true,
            ..Self::new(supersedes)
        }
    }

    /// Adds a group; a file when one is full.
    pub(crate) fn push(&mut self, g: IndexGroup) -> Option<IndexFile> {
        let full = !self.groups.is_empty()
            && (self.groups.len() >= BATCH_GROUPS
                || self.entries + g.entries.len() > BATCH_ENTRIES);
        let out = full.then(|| self.take(false));
        self.entries += g.entries.len();
        self.groups.push(g);
        out
    }

    fn take(&mut self, last: bool) -> IndexFile {
        self.entries = 0;
        IndexFile {
            supersedes: if self.every {
                self.supersedes.clone().unwrap_or_default()
            } else if last {
                self.supersedes.take().unwrap_or_default()
            } else {
                Vec::new()
            },
            groups: std::mem::take(&mut self.groups),
        }
    }

    /// The last file, if there is anything left to write (groups, or
    /// supersessions no file has recorded yet).
    pub(crate) fn finish(mut self) -> Option<IndexFile> {
        let pending = self.supersedes.as_ref().is_some_and(|s| !s.is_empty());
        (!self.groups.is_empty() || pending).then(|| self.take(true))
    }
}

impl Repository {
    /// A scratch directory for sorted runs, in the local cache.
    pub(crate) fn scratch(&self) -> Result<tempfile::TempDir> {
        let dir = self.cache_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        tempfile::Builder::new()
            .prefix("prune-")
            .tempdir_in(&dir)
            .map_err(|e| Error::io("creating a scratch directory in", &dir, e))
    }

    /// Scans the index and reads what `snapshots` need, ready to be joined.
    pub(crate) async fn scan_needs(
        &self,
        snapshots: &[SnapshotInfo],
        sort_buffer: usize,
        tmp: &std::path::Path,
    ) -> Result<(IndexScan, Needed)> {
        let lists: HashSet<ChunkId> = snapshots
            .iter()
            .flat_map(|i| i.snapshot.files.iter())
            .flat_map(|f| f.chunk_lists.iter().copied())
            .collect();
        let scan = self.scan_index(&lists, tmp, sort_buffer).await?;
        drop(lists);
        let needed = self
            .needed(snapshots, &scan.lists, tmp, sort_buffer)
            .await?;
        Ok((scan, needed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_model::{Codec, IndexEntry};

    fn group(n: usize, seed: u8) -> IndexGroup {
        IndexGroup {
            pack: PackId([seed; 32]),
            pack_length: 0,
            entries: (0..n)
                .map(|i| IndexEntry {
                    id: ChunkId::of(&[seed, i as u8, (i >> 8) as u8, (i >> 16) as u8]),
                    offset: 0,
                    length: 1,
                    raw_length: 1,
                    codec: Codec::Raw,
                })
                .collect(),
        }
    }

    #[test]
    fn index_batches_stay_small_and_supersede_last() {
        let old = vec![IndexId([7; 32])];
        let mut b = IndexBatch::new(old.clone());
        let mut files = Vec::new();
        // Three groups of 600 K entries: no file may hold two of them.
        for seed in 0..3 {
            files.extend(b.push(group(600_000, seed)));
        }
        files.extend(b.finish());
        assert_eq!(files.len(), 3);
        for f in &files {
            assert!(f.groups.iter().map(|g| g.entries.len()).sum::<usize>() <= BATCH_ENTRIES);
        }
        assert!(files[..2].iter().all(|f| f.supersedes.is_empty()));
        assert_eq!(files[2].supersedes, old);
    }

    #[test]
    fn a_batch_with_no_groups_still_records_what_it_supersedes() {
        let files: Vec<IndexFile> = IndexBatch::new(vec![IndexId([1; 32])])
            .finish()
            .into_iter()
            .collect();
        assert_eq!(files.len(), 1);
        assert!(files[0].groups.is_empty());
        assert!(IndexBatch::new(Vec::new()).finish().is_none());
    }

    #[test]
    fn bits() {
        let mut b = Bits::new(130);
        b.set(0);
        b.set(129);
        assert!(b.get(0) && b.get(129) && !b.get(1) && !b.get(64));
    }
}
