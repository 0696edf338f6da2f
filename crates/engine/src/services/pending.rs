//! Records of snapshot files made on Qdrant nodes (`pending/<id>`): written
//! right after a node makes one, removed once it is deleted. A cluster
//! backup killed in between leaves the record; the next cluster backup of
//! the same nodes finds it, sees that its process is gone, and deletes the
//! file (docs/format.md, "Snapshot files on nodes").

use bytes::Bytes;
use cairn_model::NodeFile;
use cairn_store::keys;

use crate::error::Result;
use crate::repository::Repository;

/// True when the process that wrote `f` has ended: its lease (with its
/// host and pid) is no longer live (`lease_live`: a backup holds one while
/// it makes snapshot files), or, on this host, no such process exists (a
/// killed process's lease stays live until it lapses).
fn process_gone(f: &NodeFile, lease_live: bool) -> bool {
    let here = f.host == crate::host::hostname() && std::path::Path::new("/proc/self").exists();
    !lease_live || here && !std::path::Path::new(&format!("/proc/{}", f.pid)).exists()
}

impl Repository {
    /// Records that `file` now exists on a node; the record's name.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn record_node_file(&self, file: &NodeFile) -> Result<String> {
        let name = hex::encode(rand::random::<[u8; 16]>());
        let json = serde_json::to_vec(file).expect("invariant: records serialize");
        self.store
            .put_new(&keys::pending(&name), Bytes::from(json))
            .await?;
        Ok(name)
    }

    /// Removes a record once its file is deleted.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn forget_node_file(&self, name: &str) -> Result<()> {
        self.store.delete(&keys::pending(name)).await?;
        Ok(())
    }

    /// Records whose process has ended (their files were left on nodes). A
    /// record that does not parse is named in a warning and left.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn stale_node_files(&self) -> Result<Vec<(String, NodeFile)>> {
        let listed = self.store.list(keys::PENDING_DIR).await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.storage_now().await?;
        let leases = self.leases().await?;
        let mut out = Vec::new();
        for l in listed {
            let bytes = match self.store.get(&keys::pending(&l.name)).await {
                Ok(b) => b,
                Err(cairn_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let f: NodeFile = match serde_json::from_slice(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(object = %keys::pending(&l.name), error = %e, "skipping a record of a node's snapshot file that does not parse");
                    continue;
                }
            };
            let live = leases.iter().any(|x| {
                x.is_live(now)
                    && x.lease
                        .as_ref()
                        .is_some_and(|lease| lease.host == f.host && lease.pid == f.pid)
            });
            if process_gone(&f, live) {
                out.push((l.name, f));
            }
        }
        Ok(out)
    }
}
