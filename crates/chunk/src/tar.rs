//! Tar member boundaries, for structure-aware chunking of Qdrant snapshots.
//!
//! Qdrant snapshots are uncompressed tars whose segments are themselves
//! nested tars. Forcing a chunk boundary at every member's header and at the
//! start of its data means a member's content is chunked the same way
//! wherever it sits in the archive and whatever its header says (mtimes
//! change daily), so unchanged files dedup exactly.
//!
//! [`TarScanner`] parses headers lazily as the stream goes by and reports the
//! next boundary after a position. It never affects correctness: on anything
//! that does not parse as a tar header it stops reporting boundaries for that
//! archive level, and chunking falls back to plain content-defined cuts.

use std::collections::{BTreeMap, BTreeSet};

const BLOCK: u64 = 512;
/// Largest small member read whole (GNU long names, vector storage
/// configs): one block. A longer long name leaves its member unclassified; a
/// longer config gives no record size. Waiting for at most one block of data
/// keeps the wait within what a block reader carries over (see
/// `next_boundary`) for any maximum chunk size of 2 KiB or more.
const MAX_SMALL_MEMBER: u64 = BLOCK;

/// What a tar member holds, as far as chunking cares (see format.md,
/// "Member kinds"). Decided by the member's path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    /// Anything else: chunked with the default sizes.
    Other,
    /// Vector storage data: `chunk_N.mmap` or `matrix.dat` under a
    /// `vector_storage*` directory.
    Vectors,
    /// Payload storage pages: `payload_storage/page_N.dat`.
    Payload,
    /// Write-ahead log segments: `wal/open-N`, `wal/closed-N`.
    Wal,
}

impl MemberKind {
    /// The kind of a member at `path` (`/`-separated, as in the tar).
    #[must_use]
    pub fn of_path(path: &str) -> Self {
        let mut parts = path.trim_end_matches('/').rsplit('/');
        let file = parts.next().unwrap_or("");
        let parent = parts.next().unwrap_or("");
        let numbered = |prefix: &str, suffix: &str| {
            file.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        if parent == "wal" && (numbered("open-", "") || numbered("closed-", "")) {
            return Self::Wal;
        }
        if parent == "payload_storage" && numbered("page_", ".dat") {
            return Self::Payload;
        }
        let in_vector_storage = path.split('/').any(|c| c.starts_with("vector_storage"));
        if in_vector_storage && (numbered("chunk_", ".mmap") || file == "matrix.dat") {
            return Self::Vectors;
        }
        Self::Other
    }
}

#[derive(Debug, Clone)]
struct Level {
    /// Absolute offset of the next header to parse.
    next_header: u64,
    /// End of this archive's region (member data end for nested tars).
    end: u64,
    /// The name a GNU long-name entry gave the next member.
    long_name: Option<String>,
    /// Vector record sizes read from vector storage configs in this
    /// archive: directory -> bytes per record.
    records: Vec<(String, u32)>,
}

impl Level {
    fn new(next_header: u64, end: u64) -> Self {
        Self {
            next_header,
            end,
            long_name: None,
            records: Vec::new(),
        }
    }
}

/// A member whose data gets chunked with its kind's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its kind (never [`MemberKind::Other`]).
    pub kind: MemberKind,
    /// Absolute offset of its data's first byte.
    pub data_start: u64,
    /// Absolute offset just past its data.
    pub data_end: u64,
    /// For vector data: bytes per vector record, when the vector storage
    /// config in the same directory gave it (see [`record_size`]).
    pub record_size: Option<u32>,
}

/// Bytes per record from a vector storage config (`config.json` beside the
/// `chunk_N.mmap` files): `chunk_size_bytes / chunk_size_vectors`, when both
/// are positive integers, the division is exact and the result is at most
/// 1 MiB; `None` otherwise.
#[must_use]
pub fn record_size(config: &[u8]) -> Option<u32> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    let field = |key: &str| config.get(key).and_then(serde_json::Value::as_u64);
    let (bytes, vectors) = (field("chunk_size_bytes")?, field("chunk_size_vectors")?);
    if vectors == 0 || bytes == 0 || bytes % vectors != 0 {
        return None;
    }
    u32::try_from(bytes / vectors)
        .ok()
        .filter(|&r| r <= 1 << 20)
}

/// The directory part of a member path (`""` at the top).
fn dir_of(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit_once('/')
        .map_or("", |(d, _)| d)
}

/// Incremental tar header parser over a stream (see module docs).
#[derive(Debug, Clone)]
pub struct TarScanner {
    levels: Vec<Level>,
    /// Known boundaries not yet passed, ascending.
    pending: BTreeSet<u64>,
    /// Members of a kind other than [`MemberKind::Other`] whose data is not
    /// yet passed, by data start. Their data ranges never overlap.
    members: BTreeMap<u64, Member>,
}

impl Default for TarScanner {
    fn default() -> Self {
        Self::new()
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    // GNU base-256 for large sizes: high bit set in the first byte.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A parsed header: where the member's data starts and ends, and whether
/// the member is itself a tar to descend into.
struct Header {
    data_start: u64,
    data_end: u64,
    nested: bool,
    typeflag: u8,
    /// The name field (with the ustar prefix, when there is one).
    name: String,
}

/// Why a header was not parsed.
enum Unparsed {
    /// Not a valid header: the archive level ends here.
    Malformed,
    /// Its extension headers lie past the bytes at hand: try again later.
    NeedMore,
}

fn parse_header(
    h: &[u8],
    at: u64,
    peek_ext: impl Fn(u64) -> Option<[u8; 512]>,
) -> Result<Option<Header>, Unparsed> {
    if h.iter().all(|&b| b == 0) {
        return Ok(None); // end of archive
    }
    let stored = octal(&h[148..156]).ok_or(Unparsed::Malformed)?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored {
        return Err(Unparsed::Malformed);
    }
    let size = octal(&h[124..136]).ok_or(Unparsed::Malformed)?;
    let typeflag = h[156];
    let mut data_start = at + BLOCK;
    if typeflag == b'S' {
        // GNU sparse: extension headers follow while the "isextended" flag is set.
        let mut extended = h[482] != 0;
        while extended {
            let ext = peek_ext(data_start).ok_or(Unparsed::NeedMore)?;
            extended = ext[504] != 0;
            data_start += BLOCK;
        }
    }
    let data_end = data_start.checked_add(size).ok_or(Unparsed::Malformed)?;
    let field = |f: &[u8]| {
        let len = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..len]).into_owned()
    };
    let mut name = field(&h[..100]);
    // POSIX ustar (not GNU, whose magic is "ustar  ") splits long paths into a prefix.
    if &h[257..263] == b"ustar\0" {
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    let nested = matches!(typeflag, b'0' | 0) && name.ends_with(".tar") && size >= 2 * BLOCK;
    Ok(Some(Header {
        data_start,
        data_end,
        nested,
        typeflag,
        name,
    }))
}

/// The fields of one tar header block that a reader of whole member
/// records needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarHeader {
    /// The name field (with the ustar prefix, when there is one); a GNU
    /// long name (`L` member before it) replaces it.
    pub name: String,
    /// The type flag (`0`, `5`, `L`, `S`, `x`, …).
    pub typeflag: u8,
    /// Bytes of data after the header (and after any GNU sparse
    /// extension headers), before padding to a block.
    pub size: u64,
    /// A GNU sparse header with extension headers after it (each ends the
    /// run when its own byte 504 is zero).
    pub sparse_extended: bool,
}

/// Parses one 512-byte header block: `Ok(None)` for a zero block (the end
/// of the archive), `Err(())` for a block that is not a valid header.
///
/// # Errors
/// A bad checksum or size field.
#[allow(clippy::result_unit_err)]
pub fn parse_tar_header(h: &[u8; 512]) -> Result<Option<TarHeader>, ()> {
    // Extension headers are the caller's to read: pretend the first ends
    // the run, so the data start is one block past the header per flag.
    let zero = [0u8; 512];
    match parse_header(h, 0, |_| Some(zero)) {
        Ok(None) => Ok(None),
        Ok(Some(x)) => Ok(Some(TarHeader {
            name: x.name,
            typeflag: x.typeflag,
            size: x.data_end - x.data_start,
            sparse_extended: x.typeflag == b'S' && h[482] != 0,
        })),
        Err(_) => Err(()),
    }
}

impl TarScanner {
    /// A scanner expecting a tar header at offset 0.
    #[must_use]
    pub fn new() -> Self {
        Self {
            levels: vec![Level::new(0, u64::MAX)],
            pending: BTreeSet::new(),
            members: BTreeMap::new(),
        }
    }

    /// A scanner that already knows the record size of vector data in some
    /// directories (directory, bytes per record), as if their vector
    /// storage configs had come first: for a tar whose configs are not in
    /// it (a shard snapshot put together from a partial one). A config in
    /// the tar still wins.
    #[must_use]
    pub fn with_records(records: Vec<(String, u32)>) -> Self {
        let mut s = Self::new();
        s.levels[0].records = records;
        s
    }

    /// The member of a kind other than [`MemberKind::Other`] whose data
    /// holds the byte at `pos`, if any. Known for every position from the
    /// last boundary passed to the last one returned.
    #[must_use]
    pub fn member_at(&self, pos: u64) -> Option<Member> {
        match self.members.range(..=pos).next_back() {
            Some((_, m)) if m.data_end > pos => Some(*m),
            _ => None,
        }
    }

    /// The first boundary strictly after `pos`, given `data` (the stream's
    /// bytes from absolute offset `base`). Parses every header that lies
    /// fully inside `data` and at or before the boundary it returns.
    pub fn next_boundary(&mut self, data: &[u8], base: u64, pos: u64) -> Option<u64> {
        let end = base + data.len() as u64;
        loop {
            // Drop boundaries already passed.
            while self.pending.first().is_some_and(|&b| b <= pos) {
                self.pending.pop_first();
            }
            while self
                .members
                .first_key_value()
                .is_some_and(|(_, m)| m.data_end <= pos)
            {
                self.members.pop_first();
            }
            // The innermost level whose next header comes first.
            let Some((li, at)) = self
                .levels
                .iter()
                .enumerate()
                .map(|(i, l)| (i, l.next_header))
                .min_by_key(|&(_, at)| at)
            else {
                return self.pending.first().copied();
            };
            let next_known = self.pending.first().copied();
            // A header beyond the next known boundary can wait.
            if next_known.is_some_and(|b| b < at) {
                return next_known.filter(|&b| b > pos);
            }
            // A header whose bytes went by unseen cannot be parsed any more.
            if at < base {
                self.levels.remove(li);
                continue;
            }
            // A header cut off by the end of the bytes at hand waits for more
            // (the previous member's data end, a boundary, lies less than a
            // block before it, so the caller's next buffer starts before it).
            if at + BLOCK > end {
                return next_known.filter(|&b| b > pos);
            }
            let off = usize::try_from(at - base).expect("invariant: inside the buffer");
            let header = &data[off..off + BLOCK as usize];
            let peek = |p: u64| -> Option<[u8; 512]> {
                let o = usize::try_from(p.checked_sub(base)?).ok()?;
                data.get(o..o + 512)?.try_into().ok()
            };
            match parse_header(header, at, peek) {
                Ok(Some(h)) if h.data_end <= self.levels[li].end => {
                    // Small members whose content matters (long names, vector
                    // storage configs) are read whole; when their data lies
                    // past the bytes at hand, wait as for sparse headers.
                    let small = |h: &Header| -> Option<Option<&[u8]>> {
                        let len = h.data_end - h.data_start;
                        if len > MAX_SMALL_MEMBER {
                            return Some(None);
                        }
                        let bytes = h
                            .data_start
                            .checked_sub(base)
                            .and_then(|o| usize::try_from(o).ok())
                            .and_then(|o| data.get(o..o + len as usize))?;
                        Some(Some(bytes))
                    };
                    let level = &mut self.levels[li];
                    if h.typeflag == b'L' {
                        // GNU long name: the data is the next member's path.
                        let Some(bytes) = small(&h) else {
                            return next_known.filter(|&b| b > pos);
                        };
                        level.long_name = bytes.map(|b| {
                            let len = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                            String::from_utf8_lossy(&b[..len]).into_owned()
                        });
                    } else if !matches!(h.typeflag, b'x' | b'g' | b'K') {
                        let name = level.long_name.clone().unwrap_or_else(|| h.name.clone());
                        let kind = MemberKind::of_path(&name);
                        if name.ends_with("/config.json")
                            && name.split('/').any(|c| c.starts_with("vector_storage"))
                        {
                            let Some(bytes) = small(&h) else {
                                return next_known.filter(|&b| b > pos);
                            };
                            let dir = dir_of(&name).to_string();
                            level.records.retain(|(d, _)| *d != dir);
                            if let Some(r) = bytes.and_then(record_size) {
                                level.records.push((dir, r));
                            }
                        }
                        level.long_name = None;
                        if kind != MemberKind::Other && h.data_end > h.data_start {
                            let dir = dir_of(&name);
                            let record_size = (kind == MemberKind::Vectors)
                                .then(|| level.records.iter().find(|(d, _)| d == dir).map(|r| r.1))
                                .flatten();
                            self.members.insert(
                                h.data_start,
                                Member {
                                    kind,
                                    data_start: h.data_start,
                                    data_end: h.data_end,
                                    record_size,
                                },
                            );
                        }
                    }
                    self.pending.insert(at);
                    self.pending.insert(h.data_start);
                    self.pending.insert(h.data_end);
                    self.levels[li].next_header =
                        h.data_start + (h.data_end - h.data_start).div_ceil(BLOCK) * BLOCK;
                    if h.nested {
                        self.levels.push(Level::new(h.data_start, h.data_end));
                    }
                }
                // Sparse extension headers not read yet: wait for them, so that
                // where the input is split into buffers never changes a boundary.
                Err(Unparsed::NeedMore) => return next_known.filter(|&b| b > pos),
                // End of archive, a malformed header or one that overruns its parent: this level is done.
                _ => {
                    self.levels.remove(li);
                }
            }
            // Levels whose next header lies past their end are done too.
            self.levels.retain(|l| l.next_header + BLOCK <= l.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in members {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[136..147].copy_from_slice(b"00000000000");
            h[156] = b'0';
            h[257..262].copy_from_slice(b"ustar");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn all_boundaries(data: &[u8]) -> Vec<u64> {
        let mut s = TarScanner::new();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(b) = s.next_boundary(data, 0, pos) {
            out.push(b);
            pos = b;
        }
        out
    }

    #[test]
    fn finds_members_and_nested_members() {
        let inner = tar_with(&[("a.bin", vec![1u8; 700]), ("b.bin", vec![2u8; 10])]);
        let outer = tar_with(&[("x.json", b"{}".to_vec()), ("seg.tar", inner.clone())]);
        let b = all_boundaries(&outer);
        // x.json header 0, data 512..514; seg.tar header 1024, data 1536..; inner a.bin header 1536, data 2048..2748, b.bin header 3072, data 3584..3594
        for expected in [512, 514, 1024, 1536, 2048, 2748, 3072, 3584, 3594] {
            assert!(b.contains(&expected), "{expected} missing from {b:?}");
        }
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    /// The vector member that holds `pos`, scanning all of `data` with `s`.
    fn vector_member(mut s: TarScanner, data: &[u8], pos: u64) -> Option<Member> {
        let mut at = 0;
        while let Some(b) = s.next_boundary(data, 0, at) {
            if b > pos {
                break;
            }
            at = b;
        }
        s.member_at(pos)
    }

    #[test]
    fn known_records_stand_in_for_a_config_the_tar_lacks() {
        let dir = "segments/s/files/vector_storage/vectors";
        let config = br#"{"chunk_size_bytes":3072,"chunk_size_vectors":1}"#.to_vec();
        let data = vec![5u8; 8192];
        let whole = tar_with(&[
            (&format!("{dir}/config.json"), config),
            (&format!("{dir}/chunk_0.mmap"), data.clone()),
        ]);
        let partial = tar_with(&[(&format!("{dir}/chunk_0.mmap"), data)]);
        // With its config first, the data is chunked in 3 KiB records.
        let m = vector_member(TarScanner::new(), &whole, 1024 + 600).expect("a vector member");
        assert_eq!(m.record_size, Some(3072));
        // Without it, only a scanner told the record size does the same.
        let told = TarScanner::with_records(vec![(dir.to_string(), 3072)]);
        assert_eq!(
            vector_member(told, &partial, 600)
                .expect("member")
                .record_size,
            Some(3072)
        );
        let untold = vector_member(TarScanner::new(), &partial, 600).expect("member");
        assert_eq!(untold.record_size, None);
    }

    #[test]
    fn not_a_tar_yields_nothing() {
        let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(all_boundaries(&noise).is_empty());
    }
}
