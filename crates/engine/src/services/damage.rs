//! Inspection: prove the repository sound, or name what is damaged (what
//! `check` reports and `repair snapshots` acts on).
//!
//! Structure: every index file decodes; every pack an index file names
//! exists, has the recorded length, and its trailer lists exactly the
//! entries the index gives; every chunk every snapshot needs (chunk lists
//! read) is indexed in a pack that exists. With `read_data`, packs are read
//! whole: checksum, and every blob decoded and compared with its id. Damage
//! is reported with the snapshots and files it affects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use cairn_model::{ChunkId, PackId};
use cairn_store::keys;
use futures::StreamExt;

use crate::error::Result;
use crate::progress::Progress;
use crate::read::{decode_spans, Blob, ChunkLists};
use crate::repository::Repository;

/// Which packs a check reads whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    None,
    /// Every pack.
    All,
    /// A random share of the packs (0 to 1).
    Share(f64),
    /// Part `k` of `n` (1-based): packs whose id's first byte modulo `n` is
    /// `k - 1`; running 1/n to n/n covers everything.
    Part(u32, u32),
}

impl ReadData {
    /// Parses `--read-data-subset`'s value (and a config's
    /// `read_data_subset`): a share (`10%`, `0.1`) or a part (`1/5`: run
    /// 1/5 to 5/5 on five days to cover everything).
    ///
    /// # Errors
    /// A message naming the accepted forms.
    pub fn parse_subset(s: &str) -> Result<Self, String> {
        if let Some((k, n)) = s.split_once('/') {
            let part = |v: &str| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{s:?}: expected K/N"))
            };
            let (k, n) = (part(k)?, part(n)?);
            if n == 0 || k == 0 || k > n {
                return Err(format!("{s:?}: K/N needs 1 <= K <= N"));
            }
            return Ok(Self::Part(k, n));
        }
        let share = match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
            None => s.trim().parse::<f64>(),
        }
        .map_err(|_| format!("{s:?}: expected a share (10%) or a part (1/5)"))?;
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("{s:?} is not between 0% and 100%"));
        }
        Ok(Self::Share(share))
    }
}

/// What kind of damage a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An index file does not decode (`cairn repair index` rebuilds it).
    IndexUnreadable,
    /// A pack an index file names is not in the repository.
    PackMissing,
    /// A pack's size, trailer or contents disagree with its index, or it
    /// cannot be read.
    PackDamaged,
    /// A snapshot manifest does not decode (or, encrypted, decrypt) or
    /// does not match its id: that backup cannot be restored.
    SnapshotUnreadable,
}

/// One problem a check found: what it is, which object, and the details.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The kind.
    pub kind: ProblemKind,
    /// The object's key in the repository (`index/…`, `packs/…`).
    pub object: String,
    /// What is wrong with it, in words.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.object, self.detail)
    }
}

/// A snapshot file that cannot be restored completely.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedFile {
    /// Its path in the snapshot.
    pub path: String,
    /// Why (the first missing or damaged chunk).
    pub why: String,
}

/// What a check found (`check --json` prints exactly this, with `clean`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// Nothing is wrong (no errors, no damaged snapshot).
    pub clean: bool,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs known.
    pub packs: usize,
    /// Packs read whole.
    pub packs_read: usize,
    /// Bytes read for that.
    pub bytes_read: u64,
    /// Problems that lose or endanger data.
    pub errors: Vec<Problem>,
    /// Things to know that lose nothing (leftovers a prune removes).
    pub warnings: Vec<String>,
    /// Damaged snapshots: id → the files that cannot be restored, and why.
    pub damaged: BTreeMap<String, Vec<DamagedFile>>,
}

impl CheckReport {
    /// True when nothing is wrong.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.damaged.is_empty()
    }
}

impl Repository {
    /// Inspects the repository (see the module docs).
    ///
    /// # Errors
    /// Storage errors that stop the inspection itself; damage is in the report.
    pub(crate) async fn inspect(
        &self,
        read: ReadData,
        progress: Arc<dyn Progress>,
    ) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let view = self.index_view().await?;
        // Damaged index files were skipped by index_view: count them here.
        let listed_index = self.store.list(keys::INDEX_DIR).await?;
        for l in &listed_index {
            let detail = match l.name.parse::<cairn_model::IndexId>() {
                Ok(id) if view.files.contains_key(&id) => continue,
                Ok(_) => "cannot be read (run cairn repair index)",
                Err(_) => "is not named by an index file id (a stray object)",
            };
            r.errors.push(Problem {
                kind: ProblemKind::IndexUnreadable,
                object: format!("{}/{}", keys::INDEX_DIR, l.name),
                detail: detail.into(),
            });
        }
        let present: HashMap<PackId, u64> = self.pack_sizes().await?.into_iter().collect();
        let condemned = self.condemned_packs().await?;
        r.packs = present.len();
        // Packs named by index files.
        let mut bad_packs: HashMap<PackId, String> = HashMap::new();
        let mut names: Vec<&PackId> = view.packs.keys().collect();
        names.sort();
        progress.start("check", Some(names.len() as u64));
        let trailers: Vec<(PackId, std::result::Result<(), String>)> = futures::stream::iter(names)
            .map(|pack| {
                let group = &view.packs[pack];
                let size = present.get(pack).copied();
                async move {
                    let r = match size {
                        None => Err("is missing".to_string()),
                        Some(s) if s != group.pack_length => Err(format!(
                            "is {s} bytes; its index says {}",
                            group.pack_length
                        )),
                        Some(s) => self.check_trailer(pack, s, &group.entries).await,
                    };
                    (*pack, r)
                }
            })
            .buffer_unordered(16)
            .inspect(|_| progress.advance(1))
            .collect()
            .await;
        progress.finish();
        for (pack, res) in trailers {
            if let Err(why) = res {
                if condemned.contains(&pack) && why == "is missing" {
                    continue; // a prune in progress deletes it
                }
                let kind = if why == "is missing" {
                    ProblemKind::PackMissing
                } else {
                    ProblemKind::PackDamaged
                };
                r.errors.push(Problem {
                    kind,
                    object: keys::pack(&pack),
                    detail: why.clone(),
                });
                bad_packs.insert(pack, why);
            }
        }
        for (pack, _) in present.iter().filter(|(p, _)| !view.packs.contains_key(p)) {
            r.warnings.push(format!(
                "pack {pack} is in no index file (left by an interrupted backup, or being written; a prune removes it once unused)"
            ));
        }

        // Read packs whole.
        let mut to_read: Vec<PackId> = present
            .keys()
            .filter(|p| view.packs.contains_key(p) && !bad_packs.contains_key(p))
            .copied()
            .filter(|p| match read {
                ReadData::None => false,
                ReadData::All => true,
                ReadData::Share(s) => rand::random::<f64>() < s,
                ReadData::Part(k, n) => u32::from(p.0[0]) % n.max(1) == k.saturating_sub(1),
            })
            .collect();
        to_read.sort();
        progress.start("read data", Some(to_read.iter().map(|p| present[p]).sum()));
        let read_results: Vec<(PackId, u64, std::result::Result<(), String>)> =
            futures::stream::iter(to_read)
                .map(|pack| async move {
                    let r = async {
                        let bytes = self
                            .store
                            .get(&keys::pack(&pack))
                            .await
                            .map_err(|e| e.to_string())?;
                        let len = bytes.len() as u64;
                        let sealing = self.sealing.clone();
                        tokio::task::spawn_blocking(move || {
                            let entries = cairn_pack::read_entries(&sealing, &bytes)
                                .map_err(|e| e.to_string())?;
                            let blobs: Vec<Blob> = entries.iter().map(Blob::from).collect();
                            let spans = decode_spans(&sealing, &bytes, 0, &blobs, &mut Vec::new());
                            if let Some(Err(fault)) = spans.into_iter().find(Result::is_err) {
                                return Err(fault.to_string());
                            }
                            Ok::<_, String>(len)
                        })
                        .await
                        .expect("invariant: verification does not panic")
                    }
                    .await;
                    match r {
                        Ok(len) => (pack, len, Ok(())),
                        Err(why) => (pack, 0, Err(why)),
                    }
                })
                .buffer_unordered(4)
                .inspect(|(p, _, _)| progress.advance(present[p]))
                .collect()
                .await;
        progress.finish();
        for (pack, len, res) in read_results {
            r.packs_read += 1;
            r.bytes_read += len;
            if let Err(why) = res {
                let why = format!("is damaged: {why}");
                r.errors.push(Problem {
                    kind: ProblemKind::PackDamaged,
                    object: keys::pack(&pack),
                    detail: why.clone(),
                });
                bad_packs.insert(pack, why);
            }
        }

        // What every snapshot needs.
        let ids = self.snapshot_ids().await?;
        let (snapshots, unreadable) = self.load_snapshots_reporting(&ids).await?;
        for (id, why) in unreadable {
            r.errors.push(Problem {
                kind: ProblemKind::SnapshotUnreadable,
                object: keys::snapshot(&id),
                detail: why,
            });
        }
        r.snapshots = snapshots.len();
        let unusable = |id: &ChunkId| -> Option<String> {
            let Some(locs) = view.locations.get(id) else {
                return Some(format!("chunk {id} is in no index file"));
            };
            if locs
                .iter()
                .any(|(p, _)| present.contains_key(p) && !bad_packs.contains_key(p))
            {
                None
            } else {
                let (p, _) = locs[0];
                Some(format!(
                    "chunk {id} is only in pack {} which {}",
                    p.short(),
                    bad_packs.get(&p).map_or("is missing", String::as_str)
                ))
            }
        };
        let mut list_cache = ChunkLists::new();
        for info in &snapshots {
            // Lists in unusable packs are not read: the file is named for that.
            let lists = info
                .snapshot
                .files
                .iter()
                .flat_map(|f| f.chunk_lists.iter().copied())
                .filter(|l| unusable(l).is_none());
            self.read_lists(&view.locations, lists, &mut list_cache)
                .await;
            for file in &info.snapshot.files {
                let mut why = file.chunks.iter().find_map(unusable);
                for list in &file.chunk_lists {
                    if why.is_some() {
                        break;
                    }
                    if let Some(w) = unusable(list) {
                        why = Some(w);
                        break;
                    }
                    why = match &list_cache[list] {
                        Ok(ids) => ids.iter().find_map(unusable),
                        Err(e) => Some(e.clone()),
                    };
                }
                // A file repair already marked is known damage, not news.
                if let (Some(w), None) = (why, &file.damaged) {
                    r.damaged
                        .entry(info.id.to_hex())
                        .or_default()
                        .push(DamagedFile {
                            path: file.path.clone(),
                            why: w,
                        });
                }
            }
        }
        r.clean = r.is_clean();
        Ok(r)
    }

    /// Compares a pack's trailer with the entries its index gives.
    async fn check_trailer(
        &self,
        pack: &PackId,
        size: u64,
        indexed: &[cairn_model::IndexEntry],
    ) -> std::result::Result<(), String> {
        let entries = self.read_pack_trailer(pack, size).await?;
        let a: HashSet<_> = entries
            .iter()
            .map(|e| (e.id, e.offset, e.length, e.raw_length))
            .collect();
        let b: HashSet<_> = indexed
            .iter()
            .map(|e| (e.id, e.offset, e.length, e.raw_length))
            .collect();
        if a != b {
            return Err(format!(
                "has a trailer of {} entries that disagrees with its index ({} entries)",
                entries.len(),
                indexed.len()
            ));
        }
        Ok(())
    }

    /// The index group of each of `packs` (id, length), from its trailer,
    /// or why the trailer could not be read; 16 packs at once, one step of
    /// `progress` each.
    pub(crate) async fn read_trailers(
        &self,
        packs: Vec<(PackId, u64)>,
        progress: &dyn Progress,
    ) -> Vec<(PackId, std::result::Result<cairn_model::IndexGroup, String>)> {
        futures::stream::iter(packs)
            .map(|(pack, size)| async move {
                let r = self.read_pack_trailer(&pack, size).await.map(|entries| {
                    cairn_model::IndexGroup {
                        pack,
                        pack_length: size,
                        entries,
                    }
                });
                progress.advance(1);
                (pack, r)
            })
            .buffer_unordered(16)
            .collect()
            .await
    }

    /// A pack's trailer, by two ranged reads.
    async fn read_pack_trailer(
        &self,
        pack: &PackId,
        size: u64,
    ) -> std::result::Result<Vec<cairn_model::IndexEntry>, String> {
        let key = keys::pack(pack);
        let footer_len = cairn_pack::FOOTER_LEN as u64;
        if size < footer_len {
            return Err("is shorter than a pack footer".into());
        }
        let footer = self
            .store
            .get_range(&key, size - footer_len..size)
            .await
            .map_err(|e| e.to_string())?;
        let (offset, _) =
            cairn_pack::read_footer(&self.sealing, &footer, size).map_err(|e| e.to_string())?;
        let trailer = self
            .store
            .get_range(&key, offset..size - footer_len)
            .await
            .map_err(|e| e.to_string())?;
        cairn_pack::read_trailer(&self.sealing, &trailer).map_err(|e| e.to_string())
    }
}
