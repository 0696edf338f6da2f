//! BLAKE3 digests of many small inputs at once.
//!
//! BLAKE3 reaches its speed by compressing several 1 KiB chunks of one input
//! side by side in SIMD lanes (16 with AVX-512). An input of three chunks, a
//! 768-dimension float32 vector for example, fills three lanes, so hashing
//! record-sized chunks one by one runs at about a seventh of the speed of
//! 64 KiB chunks. Here the k-th 1 KiB chunk of every input in a batch is
//! compressed together (the chunk counter is k for all of them); then the
//! chunk chaining values are merged up the BLAKE3 tree level by level, the
//! parent nodes of all inputs again side by side, roots included. The digests are exactly `blake3::hash` of each
//! input; a property test holds this module to that.
//!
//! The lane-parallel compression is the `blake3` crate's own
//! (`platform::Platform::hash_many`, which that crate exports for uses like
//! this one but does not document); the flags and IV below are constants of
//! the BLAKE3 specification.

use blake3::hazmat::{ChainingValue, HasherExt};
use blake3::platform::Platform;
use std::collections::BTreeMap;

use blake3::{Hash, Hasher, IncrementCounter};

/// BLAKE3's chunk length: the leaves of its tree.
const CHUNK_LEN: usize = 1024;

/// The BLAKE3 IV (the SHA-256 initial hash value), the key of the plain hash mode.
const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
/// Domain flags: first and last block of a chunk, parent node, root node.
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const PARENT: u8 = 4;
const ROOT: u8 = 8;
/// Domain flag of the keyed mode.
const KEYED_HASH: u8 = 16;

/// The hash mode: its key words and flag (the IV and no flag for the plain
/// hash), and the key itself for inputs hashed one by one.
#[derive(Clone, Copy)]
struct Mode {
    key: [u32; 8],
    flag: u8,
    bytes: Option<[u8; 32]>,
}

impl Mode {
    fn new(key: Option<&[u8; 32]>) -> Self {
        match key {
            None => Self {
                key: IV,
                flag: 0,
                bytes: None,
            },
            Some(k) => {
                let mut words = [0u32; 8];
                for (w, b) in words.iter_mut().zip(k.chunks_exact(4)) {
                    *w = u32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
                Self {
                    key: words,
                    flag: KEYED_HASH,
                    bytes: Some(*k),
                }
            }
        }
    }

    fn hash(&self, b: &[u8]) -> Hash {
        match &self.bytes {
            None => blake3::hash(b),
            Some(k) => blake3::keyed_hash(k, b),
        }
    }

    fn hasher(&self) -> Hasher {
        match &self.bytes {
            None => Hasher::new(),
            Some(k) => Hasher::new_keyed(k),
        }
    }
}

/// Inputs up to this length are worth batching; longer ones fill the lanes
/// on their own and go to `blake3::hash`.
pub const BATCH_MAX_LEN: usize = 16 * CHUNK_LEN;

/// Short chunks by (length, chunk counter, is root): (input, bytes).
type ShortChunks<'a> = BTreeMap<(usize, u64, bool), Vec<(usize, &'a [u8])>>;

/// `blake3::hash` of every input, in order.
#[must_use]
pub fn hash_many(inputs: &[&[u8]]) -> Vec<Hash> {
    hash_many_keyed(inputs, None)
}

/// `blake3::keyed_hash` with `key` (or `blake3::hash` without) of every
/// input, in order.
#[must_use]
pub fn hash_many_keyed(inputs: &[&[u8]], key: Option<&[u8; 32]>) -> Vec<Hash> {
    let mode = Mode::new(key);
    let platform = Platform::detect();
    // Chaining values of each input's 1 KiB chunks; inputs of one chunk are
    // their own root and get their hash in `single`.
    let mut cvs: Vec<Vec<ChainingValue>> = inputs
        .iter()
        .map(|i| Vec::with_capacity(i.len().div_ceil(CHUNK_LEN)))
        .collect();
    let mut single: Vec<Option<Hash>> = vec![None; inputs.len()];
    let mut short: ShortChunks<'_> = BTreeMap::new();
    let most = inputs
        .iter()
        .map(|i| i.len().div_ceil(CHUNK_LEN))
        .max()
        .unwrap_or(0);
    let mut full: Vec<&[u8; CHUNK_LEN]> = Vec::with_capacity(inputs.len());
    let mut owners: Vec<usize> = Vec::with_capacity(inputs.len());
    let mut out = vec![0u8; 32 * inputs.len()];
    // Inputs of at most one chunk (empty ones included, even when every
    // input is empty and the loop below runs no round) are their own root.
    for (n, input) in inputs.iter().enumerate() {
        if input.len() <= CHUNK_LEN {
            short
                .entry((input.len(), 0, true))
                .or_default()
                .push((n, input));
        }
    }
    for k in 0..most {
        full.clear();
        owners.clear();
        let start = k * CHUNK_LEN;
        for (n, input) in inputs.iter().enumerate() {
            if input.len() <= CHUNK_LEN {
                continue; // its own root: taken before this loop
            }
            if let Some(chunk) = input.get(start..start + CHUNK_LEN) {
                full.push(chunk.try_into().expect("CHUNK_LEN bytes"));
                owners.push(n);
            } else if start < input.len() {
                // A short last chunk (after all full ones of its input).
                let rest = &input[start..];
                short
                    .entry((rest.len(), k as u64, false))
                    .or_default()
                    .push((n, rest));
            }
        }
        if full.is_empty() {
            continue;
        }
        let out = &mut out[..32 * full.len()];
        platform.hash_many(
            &full,
            &mode.key,
            k as u64,
            IncrementCounter::No,
            mode.flag,
            CHUNK_START,
            CHUNK_END,
            out,
        );
        for (&n, cv) in owners.iter().zip(out.chunks_exact(32)) {
            cvs[n].push(cv.try_into().expect("32 bytes"));
        }
    }
    for ((len, counter, root), group) in short {
        let flags_end = if root { CHUNK_END | ROOT } else { CHUNK_END };
        let parts: Vec<&[u8]> = group.iter().map(|&(_, b)| b).collect();
        let outs =
            hash_equal_chunks(platform, mode, &parts, counter, flags_end).unwrap_or_else(|| {
                // Lengths that are not whole 64-byte blocks: one lane each.
                parts
                    .iter()
                    .map(|b| {
                        if root {
                            *mode.hash(b).as_bytes()
                        } else {
                            mode.hasher()
                                .set_input_offset(counter * CHUNK_LEN as u64)
                                .update(b)
                                .finalize_non_root()
                        }
                    })
                    .collect()
            });
        debug_assert!(len <= CHUNK_LEN);
        for (&(n, _), cv) in group.iter().zip(outs) {
            if root {
                single[n] = Some(Hash::from_bytes(cv));
            } else {
                cvs[n].push(cv);
            }
        }
    }
    merge_levels(platform, mode, &mut cvs);
    // The roots, side by side too: a root is its two children compressed
    // as a parent with the ROOT flag, and a 32-byte hash is the first half
    // of that output, which is what `hash_many` returns.
    let roots: Vec<[u8; 64]> = cvs
        .iter()
        .filter(|c| c.len() == 2)
        .map(|c| parent_block(&c[0], &c[1]))
        .collect();
    let refs: Vec<&[u8; 64]> = roots.iter().collect();
    let mut out = vec![0u8; 32 * refs.len()];
    platform.hash_many(
        &refs,
        &mode.key,
        0,
        IncrementCounter::No,
        PARENT | ROOT | mode.flag,
        0,
        0,
        &mut out,
    );
    let mut roots = out.chunks_exact(32);
    single
        .into_iter()
        .map(|h| {
            h.unwrap_or_else(|| {
                let root: [u8; 32] = roots
                    .next()
                    .expect("one root per input")
                    .try_into()
                    .expect("32 bytes");
                Hash::from_bytes(root)
            })
        })
        .collect()
}

/// Chaining values (or, with `ROOT` in `flags_end`, hashes) of chunks of
/// one length with the same chunk counter, compressed side by side; `None`
/// when the length is not a whole number (1 to 16) of 64-byte blocks.
fn hash_equal_chunks(
    platform: Platform,
    mode: Mode,
    parts: &[&[u8]],
    counter: u64,
    flags_end: u8,
) -> Option<Vec<[u8; 32]>> {
    fn run<const N: usize>(
        platform: Platform,
        mode: Mode,
        parts: &[&[u8]],
        counter: u64,
        flags_end: u8,
    ) -> Vec<[u8; 32]> {
        let refs: Vec<&[u8; N]> = parts
            .iter()
            .map(|p| (*p).try_into().expect("parts of one length"))
            .collect();
        let mut out = vec![0u8; 32 * refs.len()];
        platform.hash_many(
            &refs,
            &mode.key,
            counter,
            IncrementCounter::No,
            mode.flag,
            CHUNK_START,
            flags_end,
            &mut out,
        );
        out.chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect()
    }
    let len = parts.first()?.len();
    Some(match len {
        64 => run::<64>(platform, mode, parts, counter, flags_end),
        128 => run::<128>(platform, mode, parts, counter, flags_end),
        192 => run::<192>(platform, mode, parts, counter, flags_end),
        256 => run::<256>(platform, mode, parts, counter, flags_end),
        320 => run::<320>(platform, mode, parts, counter, flags_end),
        384 => run::<384>(platform, mode, parts, counter, flags_end),
        448 => run::<448>(platform, mode, parts, counter, flags_end),
        512 => run::<512>(platform, mode, parts, counter, flags_end),
        576 => run::<576>(platform, mode, parts, counter, flags_end),
        640 => run::<640>(platform, mode, parts, counter, flags_end),
        704 => run::<704>(platform, mode, parts, counter, flags_end),
        768 => run::<768>(platform, mode, parts, counter, flags_end),
        832 => run::<832>(platform, mode, parts, counter, flags_end),
        896 => run::<896>(platform, mode, parts, counter, flags_end),
        960 => run::<960>(platform, mode, parts, counter, flags_end),
        1024 => run::<1024>(platform, mode, parts, counter, flags_end),
        _ => return None,
    })
}

/// A parent node's block: the left child's chaining value, then the right's.
fn parent_block(left: &ChainingValue, right: &ChainingValue) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(left);
    b[32..].copy_from_slice(right);
    b
}

/// Reduces every input's chaining values to the root's two children,
/// level by level: neighbours pair up left to right and an odd last value
/// moves up as it is, which builds BLAKE3's tree (the left subtree holds the
/// largest power of two of chunks that leaves some for the right). The
/// parents of one level, over all inputs, are compressed side by side.
fn merge_levels(platform: Platform, mode: Mode, cvs: &mut [Vec<ChainingValue>]) {
    let mut blocks: Vec<[u8; 64]> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        blocks.clear();
        for cv in cvs.iter().filter(|c| c.len() > 2) {
            blocks.extend(cv.chunks_exact(2).map(|p| parent_block(&p[0], &p[1])));
        }
        if blocks.is_empty() {
            return;
        }
        let refs: Vec<&[u8; 64]> = blocks.iter().collect();
        out.resize(32 * refs.len(), 0);
        platform.hash_many(
            &refs,
            &mode.key,
            0,
            IncrementCounter::No,
            PARENT | mode.flag,
            0,
            0,
            &mut out,
        );
        let mut parents = out.chunks_exact(32);
        for cv in cvs.iter_mut().filter(|c| c.len() > 2) {
            let odd = (cv.len() % 2 == 1).then(|| cv[cv.len() - 1]);
            let pairs = cv.len() / 2;
            cv.clear();
            for p in parents.by_ref().take(pairs) {
                cv.push(p.try_into().expect("32 bytes"));
            }
            cv.extend(odd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn lengths_around_chunk_and_tree_edges() {
        let data: Vec<u8> = (0..40_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let lens: Vec<usize> = [
            0, 1, 63, 64, 65, 128, 512, 512, 1023, 1024, 1025, 1536, 2047, 2048, 2049, 2560, 3072,
            4096, 4608, 5000,
        ]
        .into_iter()
        .chain([
            7 * 1024,
            8 * 1024,
            8 * 1024 + 1,
            9 * 1024,
            16 * 1024,
            17 * 1024 + 5,
            33 * 1024,
        ])
        .collect();
        let inputs: Vec<&[u8]> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| &data[i..i + n])
            .collect();
        let got = hash_many(&inputs);
        for (input, h) in inputs.iter().zip(got) {
            assert_eq!(h, blake3::hash(input), "length {}", input.len());
        }
        let key = [0xA5u8; 32];
        let got = hash_many_keyed(&inputs, Some(&key));
        for (input, h) in inputs.iter().zip(got) {
            assert_eq!(
                h,
                blake3::keyed_hash(&key, input),
                "keyed, length {}",
                input.len()
            );
        }
    }

    /// Only empty inputs (no chunk round at all): each is its own root.
    #[test]
    fn only_empty_inputs() {
        for n in 0..3 {
            let inputs = vec![&[][..]; n];
            assert_eq!(hash_many(&inputs), vec![blake3::hash(b""); n]);
            let key = [3u8; 32];
            assert_eq!(
                hash_many_keyed(&inputs, Some(&key)),
                vec![blake3::keyed_hash(&key, b""); n]
            );
        }
    }

    /// `hash_many` over pseudo-random inputs of `lens` equals `blake3::hash`.
    fn check(lens: &[usize], seed: u64) -> Result<(), TestCaseError> {
        let mut data = vec![0u8; lens.iter().sum()];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut data);
        let mut at = 0;
        let inputs: Vec<&[u8]> = lens
            .iter()
            .map(|&n| {
                at += n;
                &data[at - n..at]
            })
            .collect();
        let got = hash_many(&inputs);
        prop_assert_eq!(got.len(), inputs.len());
        for (input, h) in inputs.iter().zip(got) {
            prop_assert_eq!(h, blake3::hash(input), "length {}", input.len());
        }
        // The keyed mode (encrypted repositories) equals blake3::keyed_hash.
        let key: [u8; 32] = std::array::from_fn(|i| (seed as u8).wrapping_add(i as u8 * 7));
        let got = hash_many_keyed(&inputs, Some(&key));
        for (input, h) in inputs.iter().zip(got) {
            prop_assert_eq!(
                h,
                blake3::keyed_hash(&key, input),
                "keyed, length {}",
                input.len()
            );
        }
        Ok(())
    }

    proptest! {
        /// Lengths in whole 64-byte blocks, as vector records give: short
        /// chunks of equal length are compressed side by side.
        #[test]
        fn equals_blake3_for_whole_blocks(blocks in prop::collection::vec(0usize..300, 0..60), seed: u64) {
            check(&blocks.iter().map(|b| b * 64).collect::<Vec<_>>(), seed)?;
        }

        #[test]
        fn equals_blake3(lens in prop::collection::vec(0usize..20_000, 0..40), seed: u64) {
            check(&lens, seed)?;
        }
    }
}
