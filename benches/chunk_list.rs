//! Prints `offset length chunk-id` for every chunk of a file, chunked as a
//! default repository would (64 KiB average, tar-aware). Used by
//! `benches/where-bytes-go.py` to attribute each day's new bytes to snapshot members.
//!
//! Usage: cargo run --release --example chunk-list -- FILE [AVG_BYTES] [plain]
//! `VECTORS_AVG`, `PAYLOAD_AVG` and `WAL_AVG` (bytes) set the average chunk
//! size of those member kinds (min = avg/4, max = avg*4); unset, a new
//! repository's sizes are used; 0 uses the default sizes for that kind.

use std::io::Write;

use cairn_chunk::{BlockReader, Chunker};
use cairn_model::{ChunkId, ChunkSizes, ChunkerParams};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: chunk-list FILE [AVG_BYTES] [plain]");
    let avg = args
        .get(2)
        .map_or(64 * 1024, |a| a.parse().expect("AVG_BYTES is a number"));
    let tar_aware = args.get(3).is_none_or(|m| m != "plain");
    let mut params = ChunkerParams::with_average(avg);
    let kind = |var: &str, current: Option<ChunkSizes>| match std::env::var(var) {
        Ok(v) => {
            let n: u32 = v.parse().expect("a size in bytes");
            (n > 0).then(|| ChunkSizes::with_average(n))
        }
        Err(_) => current,
    };
    params.members.vectors = kind("VECTORS_AVG", params.members.vectors);
    params.members.payload = kind("PAYLOAD_AVG", params.members.payload);
    params.members.wal = kind("WAL_AVG", params.members.wal);
    let chunker = Chunker::new(params);
    let file = std::fs::File::open(path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut offset = 0u64;
    for block in BlockReader::new(file, chunker, 8 << 20).tar_aware(tar_aware) {
        let block = block?;
        for chunk in block.chunks() {
            writeln!(out, "{offset} {} {}", chunk.len(), ChunkId::of(chunk))?;
            offset += chunk.len() as u64;
        }
    }
    out.flush()
}
