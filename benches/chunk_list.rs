//! Prints `offset length chunk-id` for every chunk of a file, chunked as a
//! default repository would (64 KiB average, tar-aware). Used by
//! `benches/where-bytes-go.py` to attribute each day's new bytes to snapshot members.
//!
//! Usage: cargo run --release --example chunk-list -- FILE [AVG_BYTES] [plain]

use std::io::Write;

use cairn_chunk::{BlockReader, Chunker};
use cairn_model::{ChunkId, ChunkerParams};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: chunk-list FILE [AVG_BYTES] [plain]");
    let avg = args
        .get(2)
        .map_or(64 * 1024, |a| a.parse().expect("AVG_BYTES is a number"));
    let tar_aware = args.get(3).is_none_or(|m| m != "plain");
    let chunker = Chunker::new(ChunkerParams::with_average(avg));
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
