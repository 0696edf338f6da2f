//! `check`: prove the repository sound, or name what is damaged (the
//! inspection itself is [`crate::services::damage`], which `repair` uses too).

use std::sync::Arc;

use crate::error::Result;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::services::damage::{CheckReport, ReadData};

impl Repository {
    /// Checks the repository: every index file decodes; every pack an index
    /// file names exists, has the recorded length, and its trailer lists
    /// exactly the entries the index gives; every chunk every snapshot needs
    /// is indexed in a pack that exists; with `read`, packs are read whole
    /// and every blob verified.
    ///
    /// # Errors
    /// Storage errors that stop the check itself; damage is in the report.
    pub async fn check(&self, read: ReadData, progress: Arc<dyn Progress>) -> Result<CheckReport> {
        self.require_read("check the repository")?;
        // A sweep during the check would delete packs it has listed and
        // report them missing: the check holds a reader's lease.
        let lease = self.read_lease().await;
        let report = self.inspect(read, progress).await;
        lease.release().await;
        report
    }
}
