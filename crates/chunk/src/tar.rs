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

const BLOCK: u64 = 512;

#[derive(Debug, Clone)]
struct Level {
    /// Absolute offset of the next header to parse.
    next_header: u64,
    /// End of this archive's region (member data end for nested tars).
    end: u64,
}

/// Incremental tar header parser over a stream (see module docs).
#[derive(Debug, Clone)]
pub struct TarScanner {
    levels: Vec<Level>,
    /// Known boundaries not yet passed, ascending.
    pending: std::collections::BTreeSet<u64>,
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
    let data_end = data_start + size;
    let name = &h[..100];
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(100);
    let nested =
        matches!(typeflag, b'0' | 0) && name[..name_len].ends_with(b".tar") && size >= 2 * BLOCK;
    Ok(Some(Header {
        data_start,
        data_end,
        nested,
    }))
}

impl TarScanner {
    /// A scanner expecting a tar header at offset 0.
    #[must_use]
    pub fn new() -> Self {
        Self {
            levels: vec![Level {
                next_header: 0,
                end: u64::MAX,
            }],
            pending: std::collections::BTreeSet::new(),
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
                    self.pending.insert(at);
                    self.pending.insert(h.data_start);
                    self.pending.insert(h.data_end);
                    self.levels[li].next_header =
                        h.data_start + (h.data_end - h.data_start).div_ceil(BLOCK) * BLOCK;
                    if h.nested {
                        self.levels.push(Level {
                            next_header: h.data_start,
                            end: h.data_end,
                        });
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

    #[test]
    fn not_a_tar_yields_nothing() {
        let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(all_boundaries(&noise).is_empty());
    }
}
