//! `dump`: one file of a snapshot, in order, to a writer (e.g. stdout).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::repository::{Repository, SnapshotInfo};
use crate::services::materialize::RestoreSummary;

impl Repository {
    /// Writes one file of a snapshot to `out` (e.g. stdout).
    ///
    /// # Errors
    /// As [`Repository::restore`]; [`Error::NoMatchingFiles`] when the path is
    /// not a file of the snapshot.
    pub async fn dump<W: Write + Send + 'static>(
        &self,
        info: &SnapshotInfo,
        path: &str,
        out: W,
    ) -> Result<RestoreSummary> {
        self.require_read("dump files from backups")?;
        let clock = std::time::Instant::now();
        let file = info
            .snapshot
            .files
            .iter()
            .find(|f| f.path == path.trim_matches('/'))
            .ok_or_else(|| Error::NoMatchingFiles {
                snapshot: info.id.to_hex(),
                filter: path.to_string(),
            })?;
        if let Some(why) = &file.damaged {
            return Err(Error::Malformed {
                what: format!("snapshot {}, file {}", info.id.short(), file.path),
                reason: format!("marked damaged by a repair: {why}"),
            });
        }
        let lease = self.read_lease().await;
        let streamed = async {
            let index = self.chunk_index().await?;
            let reader = self.reader(None);
            self.stream_file(
                info,
                file,
                &index,
                out,
                &reader,
                &crate::progress::NoProgress,
                Path::new("<stdout>"),
            )
            .await
        }
        .await;
        lease.release().await;
        let (mut out, reads) = streamed?;
        out.flush()
            .map_err(|e| Error::io("cannot write", "<stdout>", e))?;
        let mut summary = RestoreSummary {
            snapshot: info.id.to_hex(),
            target: "-".into(),
            files: 1,
            bytes: file.size,
            ..RestoreSummary::default()
        };
        summary.add_reads(&reads);
        summary.seconds = clock.elapsed().as_secs_f64();
        Ok(summary)
    }
}
