//! Delta pulls: a shard read through Qdrant's partial snapshots, stored as
//! a complete shard snapshot.
//!
//! A chain starts with a partial snapshot against the empty manifest,
//! which is a complete snapshot carrying each live segment's manifest
//! (`segments/<id>/files/segment_manifest.json`). Each later night sends
//! the manifests stored with the previous backup of the shard and gets
//! back only the segment files that changed (or 304: nothing did). The
//! stored file is then
//!
//! 1. the partial's members as they came, less the segment manifests
//!    (Qdrant's shard upload refuses them) and less its end of archive;
//! 2. every file the new manifests list that the partial did not carry,
//!    as its whole record in the previous backup's file: those chunks are
//!    named, not read, because the previous file's member table says where
//!    each record lies and records start on chunk boundaries;
//! 3. an end of archive.
//!
//! Segments the partial has no manifest for were dropped on the node, and
//! files a manifest no longer lists were deleted: neither is carried over.
//! Shard-level members (WAL, clocks, replica state, shard config) come
//! from the partial only. A chain is broken, and the shard read in full
//! with a new chain, when the node, its peer id or its Qdrant version
//! changed, when a segment's version went down (the node was rolled
//! back), when a listed file is in neither the partial nor the previous
//! file, and on the configured full night.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use cairn_chunk::parse_tar_header;
use cairn_engine::seams::Tail;
use cairn_model::{ChunkId, DeltaState, MemberSpan, PackId, PackLocation};
use serde_json::Value;

const BLOCK: usize = 512;
/// Largest long-name, pax or segment-manifest member read into memory.
const MAX_SMALL: u64 = 64 << 20;

/// The member that ends every shard snapshot Qdrant writes, after
/// `replica_state.json`: a stream without them was cut short.
const LAST_MEMBERS: [&str; 2] = ["replica_state.json", "shard_config.json"];

/// What a partial snapshot held, once read to its end.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filtered {
    /// The members passed on, at their offsets in what was passed on.
    pub members: Vec<MemberSpan>,
    /// Segment id to its manifest.
    pub manifests: BTreeMap<String, Value>,
    /// Bytes passed on.
    pub bytes: u64,
    /// Bytes per record of vector data, by directory, from the vector
    /// storage configs passed on.
    pub records: BTreeMap<String, u32>,
}

/// True for a vector storage config (`…/vector_storage…/config.json`).
fn is_vector_config(name: &str) -> bool {
    name.ends_with("/config.json") && name.split('/').any(|c| c.starts_with("vector_storage"))
}

/// The segment id of a segment manifest member, if `name` is one.
fn manifest_segment(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("segments/")?;
    let (id, file) = rest.split_once('/')?;
    (file == "files/segment_manifest.json").then_some(id)
}

/// Passes a partial snapshot's tar through, less its segment manifests and
/// its end of archive; checks that it ended as Qdrant ends a snapshot.
pub(crate) struct PartialFilter {
    inner: Box<dyn Read + Send>,
    /// Header bytes waiting to be passed on, and how far they went.
    out: Vec<u8>,
    out_at: usize,
    /// Data bytes (with padding) of the current member still to pass on.
    data_left: u64,
    written: u64,
    /// Long-name and extension records waiting for their member.
    prefix: Vec<u8>,
    long_name: Option<String>,
    seen: Filtered,
    ended: bool,
    result: Arc<Mutex<Option<Filtered>>>,
}

impl PartialFilter {
    /// A filter over `inner`; when the stream ends well, what it held goes
    /// into `result`.
    pub(crate) fn new(inner: Box<dyn Read + Send>, result: Arc<Mutex<Option<Filtered>>>) -> Self {
        Self {
            inner,
            out: Vec::new(),
            out_at: 0,
            data_left: 0,
            written: 0,
            prefix: Vec::new(),
            long_name: None,
            seen: Filtered::default(),
            ended: false,
            result,
        }
    }

    fn cut_short(what: &str) -> std::io::Error {
        std::io::Error::other(format!(
            "the partial snapshot stream ended early ({what}): the node stopped writing it"
        ))
    }

    /// Fills `buf` from the stream; its end there means it was cut at `place`.
    fn fill(&mut self, buf: &mut [u8], place: &str) -> std::io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Self::cut_short(place)
            } else {
                e
            }
        })
    }

    fn block(&mut self) -> std::io::Result<[u8; BLOCK]> {
        let mut b = [0u8; BLOCK];
        self.fill(&mut b, "inside a header")?;
        Ok(b)
    }

    fn small(&mut self, size: u64) -> std::io::Result<Vec<u8>> {
        if size > MAX_SMALL {
            return Err(std::io::Error::other(format!(
                "a {size}-byte name or manifest member in a partial snapshot"
            )));
        }
        let padded = usize::try_from(size.div_ceil(BLOCK as u64) * BLOCK as u64)
            .expect("invariant: bounded above");
        let mut data = vec![0u8; padded];
        self.fill(&mut data, "inside a member")?;
        Ok(data)
    }

    /// Reads the next record's headers; leaves a member to pass on in
    /// `out` and `data_left`, or ends the archive.
    fn next_record(&mut self) -> std::io::Result<()> {
        loop {
            let h = self.block()?;
            let header = parse_tar_header(&h).map_err(|()| {
                std::io::Error::other("a malformed tar header in a partial snapshot")
            })?;
            let Some(header) = header else {
                return self.end_of_archive();
            };
            match header.typeflag {
                b'L' | b'K' | b'x' | b'g' => {
                    let data = self.small(header.size)?;
                    if header.typeflag == b'L' {
                        let len = usize::try_from(header.size)
                            .unwrap_or(usize::MAX)
                            .min(data.len());
                        let name = &data[..len];
                        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                        self.long_name = Some(String::from_utf8_lossy(name).into_owned());
                    }
                    self.prefix.extend_from_slice(&h);
                    self.prefix.extend_from_slice(&data);
                    continue;
                }
                _ => {}
            }
            let name = self.long_name.take().unwrap_or(header.name);
            let mut headers = std::mem::take(&mut self.prefix);
            headers.extend_from_slice(&h);
            if header.sparse_extended {
                loop {
                    let ext = self.block()?;
                    headers.extend_from_slice(&ext);
                    if ext[504] == 0 {
                        break;
                    }
                }
            }
            if let Some(segment) = manifest_segment(&name) {
                let data = self.small(header.size)?;
                let len = usize::try_from(header.size).expect("invariant: bounded above");
                let manifest: Value = serde_json::from_slice(&data[..len]).map_err(|e| {
                    std::io::Error::other(format!("the manifest of segment {segment}: {e}"))
                })?;
                self.seen.manifests.insert(segment.to_string(), manifest);
                continue;
            }
            let padded = header.size.div_ceil(BLOCK as u64) * BLOCK as u64;
            let start = self.written;
            self.out_at = 0;
            self.data_left = padded;
            if is_vector_config(&name) && header.size <= MAX_SMALL {
                let data = self.small(header.size)?;
                let len = usize::try_from(header.size).expect("invariant: bounded above");
                if let Some(r) = cairn_chunk::record_size(&data[..len]) {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    self.seen.records.insert(dir.to_string(), r);
                }
                headers.extend_from_slice(&data);
                self.data_left = 0;
            }
            self.seen.members.push(MemberSpan {
                name,
                start,
                end: start + headers.len() as u64 + self.data_left,
            });
            self.out = headers;
            return Ok(());
        }
    }

    fn end_of_archive(&mut self) -> std::io::Result<()> {
        let second = self.block()?;
        if second.iter().any(|&b| b != 0) {
            return Err(std::io::Error::other(
                "a partial snapshot's end of archive is followed by data",
            ));
        }
        // Read to the end, so the stream's own end-of-stream checks run.
        std::io::copy(&mut self.inner, &mut std::io::sink())?;
        let names: Vec<&str> = self
            .seen
            .members
            .iter()
            .rev()
            .take(2)
            .map(|m| m.name.as_str())
            .collect();
        if names != [LAST_MEMBERS[1], LAST_MEMBERS[0]] {
            return Err(Self::cut_short(&format!(
                "it ends with {names:?}, not with {LAST_MEMBERS:?}"
            )));
        }
        let mut seen = std::mem::take(&mut self.seen);
        seen.bytes = self.written;
        *self
            .result
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(seen);
        self.ended = true;
        Ok(())
    }
}

impl Read for PartialFilter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.out_at < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_at);
                buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
                self.out_at += n;
                self.written += n as u64;
                return Ok(n);
            }
            if self.data_left > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(Self::cut_short("inside a member's data"));
                }
                self.data_left -= n as u64;
                self.written += n as u64;
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            self.next_record()?;
        }
    }
}

/// A stored shard snapshot a delta continues: its chunks, where each
/// starts in the file and which pack holds it.
pub(crate) struct BaseFile {
    chunks: Vec<ChunkId>,
    /// `starts[i]`: offset of chunk `i`; one more entry, the file's size.
    starts: Vec<u64>,
    /// `pack_of[i]`: chunk `i`'s pack, in `packs`.
    pack_of: Vec<u32>,
    packs: Vec<PackId>,
}

impl BaseFile {
    /// From the file's chunks as the chunk index located them.
    pub(crate) fn new(layout: Vec<(ChunkId, PackLocation)>) -> Self {
        let mut starts = Vec::with_capacity(layout.len() + 1);
        let mut chunks = Vec::with_capacity(layout.len());
        let mut pack_of = Vec::with_capacity(layout.len());
        let mut packs = Vec::new();
        let mut slot: HashMap<PackId, u32> = HashMap::new();
        let mut at = 0u64;
        for (id, loc) in layout {
            starts.push(at);
            at += u64::from(loc.raw_length);
            chunks.push(id);
            let next = u32::try_from(packs.len()).expect("invariant: < 2^32 packs");
            let p = *slot.entry(loc.pack).or_insert_with(|| {
                packs.push(loc.pack);
                next
            });
            pack_of.push(p);
        }
        starts.push(at);
        Self {
            chunks,
            starts,
            pack_of,
            packs,
        }
    }

    /// The packs holding chunks `range`, each once.
    fn packs_of(
        &self,
        range: std::ops::Range<usize>,
        into: &mut Vec<PackId>,
        seen: &mut HashSet<u32>,
    ) {
        for &p in &self.pack_of[range] {
            if seen.insert(p) {
                into.push(self.packs[p as usize]);
            }
        }
    }

    fn size(&self) -> u64 {
        *self
            .starts
            .last()
            .expect("invariant: one start past the end")
    }

    /// The chunks that hold exactly `start..end`, or `None` when either
    /// end falls inside a chunk.
    fn chunks_of(&self, start: u64, end: u64) -> Option<std::ops::Range<usize>> {
        let a = self.starts.binary_search(&start).ok()?;
        let b = self.starts.binary_search(&end).ok()?;
        (a <= b).then_some(a..b)
    }

    /// The whole file, for a night on which nothing changed.
    pub(crate) fn whole(&self) -> Tail {
        Tail {
            known: self.chunks.clone(),
            packs: self.packs.clone(),
            known_bytes: self.size(),
            after: Vec::new(),
        }
    }
}

/// The `segment_version` of a segment manifest.
fn segment_version(m: &Value) -> Option<u64> {
    m.get("segment_version").and_then(Value::as_u64)
}

/// The end of the stored file after a delta's members, and the member
/// table of the whole file; or why the chain is broken.
pub(crate) fn complete(
    got: &Filtered,
    prev: &DeltaState,
    base: &BaseFile,
) -> Result<(Tail, Vec<MemberSpan>), String> {
    let empty = serde_json::Map::new();
    let old = prev.manifest.as_object().unwrap_or(&empty);
    for (id, m) in &got.manifests {
        if let (Some(before), Some(now)) =
            (old.get(id).and_then(segment_version), segment_version(m))
        {
            if now < before {
                return Err(format!(
                    "segment {id} went back from version {before} to {now} (the node was restored to an older state)"
                ));
            }
        }
    }
    let passed: HashSet<&str> = got.members.iter().map(|m| m.name.as_str()).collect();
    let stored: HashMap<&str, &MemberSpan> =
        prev.members.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut needed: Vec<&MemberSpan> = Vec::new();
    for (id, m) in &got.manifests {
        let files = m
            .get("file_versions")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("the manifest of segment {id} lists no files"))?;
        let names = files
            .keys()
            .map(String::as_str)
            .chain(["segment.json", "version.info"]);
        for f in names {
            let path = format!("segments/{id}/files/{f}");
            if passed.contains(path.as_str()) {
                continue;
            }
            let span = stored.get(path.as_str()).ok_or_else(|| {
                format!("{path} is in neither the partial snapshot nor the previous backup")
            })?;
            needed.push(span);
        }
    }
    needed.sort_by_key(|m| m.start);
    needed.dedup_by_key(|m| m.start);
    let mut tail = first();
    let mut members = got.members.clone();
    let mut at = got.bytes;
    let mut seen = HashSet::new();
    for m in needed {
        let range = base.chunks_of(m.start, m.end).ok_or_else(|| {
            format!(
                "{} does not start and end on chunk boundaries in the previous backup",
                m.name
            )
        })?;
        tail.known.extend_from_slice(&base.chunks[range.clone()]);
        base.packs_of(range, &mut tail.packs, &mut seen);
        tail.known_bytes += m.end - m.start;
        members.push(MemberSpan {
            name: m.name.clone(),
            start: at,
            end: at + (m.end - m.start),
        });
        at += m.end - m.start;
    }
    Ok((tail, members))
}

/// The end of a chain's first file: the partial snapshot was complete,
/// only its end of archive is put back.
pub(crate) fn first() -> Tail {
    Tail {
        after: vec![0u8; 2 * BLOCK],
        ..Tail::default()
    }
}

/// Where the chain stands after a night that read `got` from `peer_id`
/// running `version` and stored a file of `members` (`prev`: the night it
/// continued, if any).
pub(crate) fn state_after(
    got: &Filtered,
    members: Vec<MemberSpan>,
    prev: Option<&DeltaState>,
    peer_id: Option<u64>,
    version: String,
) -> DeltaState {
    DeltaState {
        peer_id,
        version,
        nights: prev.map_or(0, |p| p.nights + 1),
        manifest: Value::Object(got.manifests.clone().into_iter().collect()),
        records: records_of(got, prev),
        members,
    }
}

/// The record sizes of the file put together from `got` and the previous
/// file: the previous ones of segments still there, then those `got`
/// carried.
fn records_of(got: &Filtered, prev: Option<&DeltaState>) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = prev
        .map(|p| {
            p.records
                .iter()
                .filter(|(dir, _)| {
                    dir.strip_prefix("segments/")
                        .and_then(|r| r.split_once('/'))
                        .is_some_and(|(id, _)| got.manifests.contains_key(id))
                })
                .map(|(d, r)| (d.clone(), *r))
                .collect()
        })
        .unwrap_or_default();
    out.extend(got.records.iter().map(|(d, r)| (d.clone(), *r)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `(name, data)` members as Qdrant's streams end: two zero
    /// blocks. Names over 100 bytes get a GNU long-name record.
    fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in members {
            if name.len() > 99 {
                let mut long = name.as_bytes().to_vec();
                long.push(0);
                out.extend(header("././@LongLink", b'L', long.len() as u64));
                out.extend(padded(&long));
            }
            out.extend(header(&name[..name.len().min(99)], b'0', data.len() as u64));
            out.extend(padded(data));
        }
        out.extend([0u8; 1024]);
        out
    }

    fn padded(d: &[u8]) -> Vec<u8> {
        let mut v = d.to_vec();
        v.resize(d.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    fn header(name: &str, typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar ");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn filter(bytes: Vec<u8>) -> (std::io::Result<Vec<u8>>, Option<Filtered>) {
        let result = Arc::new(Mutex::new(None));
        let mut f = PartialFilter::new(Box::new(std::io::Cursor::new(bytes)), Arc::clone(&result));
        let mut out = Vec::new();
        let r = f.read_to_end(&mut out).map(|_| out);
        let got = result.lock().unwrap().clone();
        (r, got)
    }

    fn manifest(version: u64, files: &[&str]) -> Vec<u8> {
        let files: serde_json::Map<String, Value> = files
            .iter()
            .map(|f| ((*f).to_string(), Value::from(version)))
            .collect();
        serde_json::to_vec(&serde_json::json!({"segment_version": version, "file_versions": files}))
            .unwrap()
    }

    const SEG: &str = "segments/aaaa/files/";

    #[test]
    fn a_partial_is_passed_on_without_its_manifests_and_end_of_archive() {
        let long = format!("{SEG}payload_index/{}/data.bin", "x".repeat(120));
        let m = manifest(3, &["vectors.bin", &long[SEG.len()..]]);
        let man = format!("{SEG}segment_manifest.json");
        let config = format!("{SEG}vector_storage/vectors/config.json");
        let input = tar(&[
            (
                &config,
                br#"{"chunk_size_bytes":3072,"chunk_size_vectors":1}"#,
            ),
            (&format!("{SEG}vectors.bin"), b"vvvv"),
            (&man, &m),
            (&long, b"index"),
            ("replica_state.json", b"{}"),
            ("shard_config.json", b"{}"),
        ]);
        let (out, got) = filter(input.clone());
        let out = out.unwrap();
        let got = got.expect("ended well");
        assert_eq!(got.bytes, out.len() as u64);
        // What was passed on is the input less the manifest's two blocks
        // and the end of archive.
        assert_eq!(out.len(), input.len() - 2 * BLOCK - 1024);
        let names: Vec<&str> = got.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                &config,
                &format!("{SEG}vectors.bin"),
                &long,
                "replica_state.json",
                "shard_config.json"
            ]
        );
        // A vector storage config's record size is kept for the next night.
        assert_eq!(got.records[&format!("{SEG}vector_storage/vectors")], 3072);
        // Spans tile the output; the long name's record belongs to its member.
        assert_eq!(got.members[0].start, 0);
        for w in got.members.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert_eq!(got.members[2].end - got.members[2].start, 4 * BLOCK as u64);
        assert_eq!(got.manifests["aaaa"]["segment_version"], 3);
    }

    #[test]
    fn a_stream_cut_short_is_refused() {
        let full = tar(&[
            (&format!("{SEG}vectors.bin"), &[7u8; 3000]),
            ("replica_state.json", b"{}"),
            ("shard_config.json", b"{}"),
        ]);
        // Without the end of archive, inside data, inside a header.
        for cut in [full.len() - 1024, 1000, 3584 + 100] {
            let (out, got) = filter(full[..cut].to_vec());
            assert!(
                out.unwrap_err().to_string().contains("ended early"),
                "{cut}"
            );
            assert!(got.is_none());
        }
        // Complete, but not ended by the shard's closing members.
        let (out, _) = filter(tar(&[
            (&format!("{SEG}vectors.bin"), b"v"),
            ("shard_config.json", b"{}"),
        ]));
        assert!(out.unwrap_err().to_string().contains("replica_state.json"));
    }

    fn state(members: &[(&str, u64, u64)], version: u64) -> DeltaState {
        DeltaState {
            peer_id: Some(1),
            version: "1.18.3".into(),
            nights: 0,
            manifest: serde_json::json!({"aaaa": {"segment_version": version, "file_versions": {}}}),
            records: BTreeMap::new(),
            members: members
                .iter()
                .map(|&(n, s, e)| MemberSpan {
                    name: n.into(),
                    start: s,
                    end: e,
                })
                .collect(),
        }
    }

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    /// Chunks of `lens`, chunk `i` in pack `i % 2`.
    fn base(lens: &[u32]) -> BaseFile {
        BaseFile::new(
            lens.iter()
                .enumerate()
                .map(|(i, &len)| {
                    let i = u8::try_from(i).unwrap();
                    let loc = PackLocation {
                        pack: PackId([i % 2; 32]),
                        offset: 0,
                        length: len,
                        raw_length: len,
                        codec: cairn_model::Codec::Raw,
                    };
                    (id(i + 1), loc)
                })
                .collect(),
        )
    }

    #[test]
    fn a_delta_names_the_unchanged_files_records_and_drops_what_is_gone() {
        let got = Filtered {
            members: vec![
                MemberSpan {
                    name: format!("{SEG}a"),
                    start: 0,
                    end: 1024,
                },
                MemberSpan {
                    name: "shard_config.json".into(),
                    start: 1024,
                    end: 2048,
                },
            ],
            manifests: [(
                "aaaa".to_string(),
                serde_json::from_slice(&manifest(5, &["a", "b"])).unwrap(),
            )]
            .into(),
            bytes: 2048,
            records: BTreeMap::new(),
        };
        let segj = format!("{SEG}segment.json");
        let info = format!("{SEG}version.info");
        let b = format!("{SEG}b");
        let gone = "segments/old/files/x";
        // The previous file: b, segment.json, version.info and a dropped
        // segment's file, in chunks of 512 bytes (b is two chunks).
        let prev = state(
            &[
                (&b, 0, 1024),
                (&segj, 1024, 1536),
                (&info, 1536, 2048),
                (gone, 2048, 2560),
            ],
            4,
        );
        let file = base(&[512; 5]);
        let (tail, members) = complete(&got, &prev, &file).unwrap();
        assert_eq!(tail.known, [id(1), id(2), id(3), id(4)]);
        assert_eq!(tail.packs, [PackId([0; 32]), PackId([1; 32])]);
        assert_eq!(tail.known_bytes, 2048);
        assert_eq!(tail.after, vec![0u8; 1024]);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [&format!("{SEG}a"), "shard_config.json", &b, &segj, &info]
        );
        assert_eq!((members[2].start, members[4].end), (2048, 4096));

        // A segment whose version went down breaks the chain.
        let newer = state(
            &prev
                .members
                .iter()
                .map(|m| (m.name.as_str(), m.start, m.end))
                .collect::<Vec<_>>(),
            6,
        );
        assert!(complete(&got, &newer, &file)
            .unwrap_err()
            .contains("went back"));
        // So does a listed file that is nowhere.
        let lacking = state(&[(&segj, 1024, 1536), (&info, 1536, 2048)], 4);
        assert!(complete(&got, &lacking, &file)
            .unwrap_err()
            .contains("neither"));
        // And a record that does not sit on chunk boundaries.
        let odd = base(&[700, 1860]);
        assert!(complete(&got, &prev, &odd)
            .unwrap_err()
            .contains("boundaries"));
    }
}
