//! Restore drill outcomes (`drills/<snapshot id>`): the latest drill of
//! each snapshot, kept in the repository so that `snapshots`, `report`,
//! the daemon and its metrics all see it.

use std::collections::HashMap;

use bytes::Bytes;
use cairn_model::{DrillRecord, SnapshotId};
use cairn_store::keys;
use futures::StreamExt;

use crate::error::Result;
use crate::repository::Repository;

impl Repository {
    /// Records `drill` as the latest drill of its snapshot.
    ///
    /// # Errors
    /// Storage errors; a snapshot id that does not parse.
    pub async fn record_drill(&self, id: &SnapshotId, drill: &DrillRecord) -> Result<()> {
        let json = serde_json::to_vec(drill).expect("invariant: drill records serialize");
        self.store
            .put_replace(&keys::drill(id), Bytes::from(json))
            .await?;
        Ok(())
    }

    /// The latest drill of each snapshot that has one, by hex snapshot id.
    /// A record that cannot be read is skipped with a warning.
    ///
    /// # Errors
    /// Storage errors listing them.
    pub async fn drills(&self) -> Result<HashMap<String, DrillRecord>> {
        let listed = self.store.list(keys::DRILL_DIR).await?;
        let read: Vec<Option<DrillRecord>> = futures::stream::iter(listed)
            .map(|l| {
                let repo = self.clone();
                let key = format!("{}/{}", keys::DRILL_DIR, l.name);
                async move {
                    match repo.store.get(&key).await {
                        Ok(b) => serde_json::from_slice(&b)
                            .map_err(|e| tracing::warn!(key = %key, error = %e, "skipping an unreadable drill record"))
                            .ok(),
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "skipping a drill record that cannot be read");
                            None
                        }
                    }
                }
            })
            .buffered(16)
            .collect()
            .await;
        Ok(read
            .into_iter()
            .flatten()
            .map(|d| (d.snapshot.clone(), d))
            .collect())
    }
}
