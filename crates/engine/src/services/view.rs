//! The repository's index as one view: every readable index file, where
//! each chunk is and what each pack holds; and the prune plans in force.
//! Prune, check, report and chunk-list reads share it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use cairn_model::{ChunkId, GcPlan, IndexEntry, IndexFile, IndexGroup, IndexId, PackId};
use cairn_store::keys;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::read::{self, list_ids, Blob, ChunkLists, Fetched};
use crate::repository::Repository;

/// Chunk → every (pack, entry) that holds it.
pub(crate) type Locations = HashMap<ChunkId, Vec<(PackId, IndexEntry)>>;

/// All readable index files: where each chunk is, what each pack holds.
#[derive(Debug, Default)]
pub(crate) struct IndexView {
    /// Index file → the packs it names (their groups are in `packs`: one
    /// copy of each entry, not one per file that names it).
    pub(crate) files: BTreeMap<IndexId, Vec<PackId>>,
    /// Chunk → every (pack, entry) that holds it.
    pub(crate) locations: Locations,
    /// Pack → its group.
    pub(crate) packs: HashMap<PackId, IndexGroup>,
}

impl IndexView {
    fn add(&mut self, name: IndexId, file: IndexFile) {
        let mut named = Vec::with_capacity(file.groups.len());
        for g in file.groups {
            for e in &g.entries {
                let locs = self.locations.entry(e.id).or_default();
                if !locs.iter().any(|(p, _)| *p == g.pack) {
                    locs.push((g.pack, *e));
                }
            }
            named.push(g.pack);
            // A pack named by two files has the same entries in both
            // (they are its trailer's): the first copy stands for both.
            self.packs.entry(g.pack).or_insert(g);
        }
        self.files.insert(name, named);
    }
}

/// An index file as read, or `None` when it is to be skipped: damaged or a
/// stray object (named in a warning; chunks only it located count as
/// absent: a backup stores them again, a restore that needs them says
/// which), or gone since it was listed (a prune).
///
/// # Errors
/// Any other failure to read it.
pub(crate) fn skip_damaged_index(name: IndexId, r: Result<IndexFile>) -> Result<Option<IndexFile>> {
    match r {
        Ok(f) => Ok(Some(f)),
        Err(e @ Error::Malformed { .. }) => {
            tracing::warn!(object = %keys::index(&name), error = %e, "skipping a damaged index file (cairn repair index rebuilds index files from packs)");
            Ok(None)
        }
        Err(Error::Store(cairn_store::Error::NotFound { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Repository {
    /// Every readable prune plan: name, plan, storage time it was written.
    pub(crate) async fn gc_plans(&self) -> Result<Vec<(String, GcPlan, DateTime<Utc>)>> {
        let mut out = Vec::new();
        for l in self.store.list(keys::GC_DIR).await? {
            match self.store.get(&keys::gc_plan(&l.name)).await {
                Ok(b) => match serde_json::from_slice::<GcPlan>(&b) {
                    Ok(p) => out.push((l.name, p, l.last_modified)),
                    Err(e) => {
                        tracing::warn!(object = %keys::gc_plan(&l.name), error = %e, "skipping an unreadable prune plan")
                    }
                },
                Err(cairn_store::Error::NotFound { .. }) => {}
                Err(e @ cairn_store::Error::Undecryptable { .. }) => {
                    tracing::warn!(object = %keys::gc_plan(&l.name), error = %e, "skipping an unreadable prune plan")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Packs some prune plan condemned: no backup may deduplicate against them.
    pub(crate) async fn condemned_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self
            .gc_plans()
            .await?
            .into_iter()
            .flat_map(|(_, p, _)| p.condemned_packs)
            .collect())
    }

    /// Reads and decodes one index file.
    pub(crate) async fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let b = self
            .store
            .get(&keys::index(id))
            .await
            .map_err(|e| crate::error::damaged(e, || format!("index file {id}")))?;
        IndexFile::decode(&b).map_err(|e| Error::Malformed {
            what: format!("index file {id}"),
            reason: e.to_string(),
        })
    }

    /// Reads every index file (damaged ones are named and skipped).
    pub(crate) async fn index_view(&self) -> Result<IndexView> {
        let listed = self.list_index().await?;
        let loaded: Vec<(IndexId, Result<IndexFile>)> = futures::stream::iter(listed)
            .map(|(id, _)| async move { (id, self.load_index_file(&id).await) })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut view = IndexView::default();
        for (name, r) in loaded {
            if let Some(f) = skip_damaged_index(name, r)? {
                view.add(name, f);
            }
        }
        Ok(view)
    }

    /// Reads one blob, verified, from the first pack that holds it.
    pub(crate) async fn read_blob(
        &self,
        locations: &Locations,
        id: &ChunkId,
    ) -> std::result::Result<Vec<u8>, String> {
        let locs = locations
            .get(id)
            .ok_or_else(|| format!("chunk {id} is in no index file"))?;
        let mut last = String::new();
        for (pack, e) in locs {
            let r = self
                .store
                .get_range(&keys::pack(pack), e.offset..e.offset + u64::from(e.length))
                .await;
            match r {
                Ok(stored) => match cairn_pack::decode_blob(
                    &self.sealing,
                    &stored,
                    *id,
                    e.codec,
                    e.raw_length,
                ) {
                    Ok(raw) => return Ok(raw),
                    Err(err) => last = format!("pack {}: {err}", pack.short()),
                },
                Err(err) => last = format!("pack {}: {err}", pack.short()),
            }
        }
        Err(last)
    }
}

impl Repository {
    /// Reads those of the chunk lists `lists` (located by `locations`) that `out`
    /// does not hold yet into it, many to a request. A list whose first
    /// copy is unusable is read again from its other copies, one by one.
    pub(crate) async fn read_lists(
        &self,
        locations: &Locations,
        lists: impl IntoIterator<Item = ChunkId>,
        out: &mut ChunkLists,
    ) {
        let mut wanted = Vec::new();
        for id in lists {
            if out.contains_key(&id) {
                continue;
            }
            match locations.get(&id).and_then(|l| l.first()) {
                Some((pack, e)) => {
                    wanted.push((*pack, Blob::from(e)));
                    out.insert(id, Err(String::new()));
                }
                None => {
                    out.insert(
                        id,
                        Err(format!("chunk list {} is in no index file", id.short())),
                    );
                }
            }
        }
        let reader = self.reader(None);
        let plan = read::plan(wanted, &reader.limits);
        let parsed: Vec<Vec<(ChunkId, std::result::Result<Vec<ChunkId>, String>)>> = self
            .fetch(
                plan.reads,
                &reader,
                Arc::new(|f: Fetched| {
                    f.read
                        .blobs
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let ids = match f.blob(i) {
                                Ok(raw) => list_ids(raw).ok_or_else(|| {
                                    format!("chunk list {} has a partial id", b.id.short())
                                }),
                                Err(fault) => Err(format!("pack {}: {fault}", f.read.pack.short())),
                            };
                            (b.id, ids)
                        })
                        .collect()
                }),
            )
            .collect()
            .await;
        for (id, ids) in parsed.into_iter().flatten() {
            let ids = match ids {
                Ok(ids) => Ok(ids),
                // Another copy may be sound.
                Err(first) => match locations.get(&id).map(Vec::len) {
                    Some(n) if n > 1 => self.read_blob(locations, &id).await.and_then(|raw| {
                        list_ids(&raw)
                            .ok_or_else(|| format!("chunk list {} has a partial id", id.short()))
                    }),
                    _ => Err(first),
                },
            };
            out.insert(id, ids);
        }
    }
}
