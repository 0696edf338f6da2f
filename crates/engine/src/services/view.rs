//! The repository's index as one view: every readable index file, where
//! each chunk is and what each pack holds; and the prune plans in force.
//! Prune, check, report and chunk-list reads share it.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_model::{ChunkId, GcPlan, IndexEntry, IndexFile, IndexGroup, IndexId, PackId};
use cairn_store::keys;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::{Error, Repository, Result};

/// All readable index files: where each chunk is, what each pack holds.
#[derive(Debug, Default)]
pub(crate) struct IndexView {
    pub(crate) files: BTreeMap<IndexId, IndexFile>,
    /// Chunk → every (pack, entry) that holds it.
    pub(crate) locations: HashMap<ChunkId, Vec<(PackId, IndexEntry)>>,
    /// Pack → its group.
    pub(crate) packs: HashMap<PackId, IndexGroup>,
}

impl IndexView {
    fn add(&mut self, name: IndexId, file: IndexFile) {
        for g in &file.groups {
            for e in &g.entries {
                let locs = self.locations.entry(e.id).or_default();
                if !locs.iter().any(|(p, _)| *p == g.pack) {
                    locs.push((g.pack, *e));
                }
            }
            self.packs.entry(g.pack).or_insert_with(|| g.clone());
        }
        self.files.insert(name, file);
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

    /// Reads every index file (damaged ones are named and skipped).
    pub(crate) async fn index_view(&self) -> Result<IndexView> {
        let listed = self.list_index().await?;
        let loaded: Vec<(IndexId, Result<IndexFile>)> = futures::stream::iter(listed)
            .map(|(id, _)| async move {
                let r = async {
                    let b = self.store.get(&keys::index(&id)).await?;
                    IndexFile::decode(&b).map_err(|e| Error::Malformed {
                        what: format!("index file {id}"),
                        reason: e.to_string(),
                    })
                }
                .await;
                (id, r)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut view = IndexView::default();
        for (name, r) in loaded {
            match r {
                Ok(f) => view.add(name, f),
                Err(e @ Error::Malformed { .. }) => {
                    tracing::warn!(object = %keys::index(&name), error = %e, "skipping a damaged index file");
                }
                Err(Error::Store(cairn_store::Error::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(view)
    }

    /// Reads one blob, verified, from the first pack that holds it.
    pub(crate) async fn read_blob(
        &self,
        view: &IndexView,
        id: &ChunkId,
    ) -> std::result::Result<Vec<u8>, String> {
        let locs = view
            .locations
            .get(id)
            .ok_or_else(|| format!("chunk {id} is in no index file"))?;
        let mut last = String::new();
        for (pack, e) in locs {
            let r = self
                .store
                .get_range(&keys::pack(pack), e.offset..e.offset + u64::from(e.length))
                .await;
            match r {
                Ok(stored) => match cairn_pack::decode_blob(&stored, *id, e.codec, e.raw_length) {
                    Ok(raw) => return Ok(raw),
                    Err(err) => last = format!("pack {}: {err}", pack.short()),
                },
                Err(err) => last = format!("pack {}: {err}", pack.short()),
            }
        }
        Err(last)
    }
}
