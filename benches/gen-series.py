#!/usr/bin/env python3
"""Generates a multi-GB, Qdrant-like snapshot series for benches/compare.sh.

Each day is one uncompressed tar shaped like a Qdrant collection snapshot:
per segment, float32 vector storage (values of normalised-vector magnitude,
so they compress about as poorly as real vectors), an HNSW-like links file,
payload pages (compressible JSON text), id-tracker files, and a WAL file.
Day over day, like the real churn fixture: 5 % new points appended, 2 %
rewritten (moved to the appendable end, old slot flagged), 1 % deleted
(flags), links partly rewritten; on day 4
the "optimizer" rebuilds the main segment under a new id (vectors kept but
re-ordered in runs, links rebuilt), as Qdrant does.

Usage: gen-series.py OUT_DIR [--gib 1.0] [--days 6] [--seed 1]
"""
import argparse
import io
import os
import random
import tarfile
import uuid

DIM = 128
VEC = DIM * 4


# Exponent byte of each float32: magnitudes in [2^-7, 2^-5), random sign.
EXPONENT = bytes((0x3C | (b & 0x80)) if b & 1 else (0x3D | (b & 0x80)) for b in range(256))


def randbytes(rng, n):
    """rng.randbytes in pieces (it overflows above 256 MiB)."""
    piece = 64 << 20
    return b"".join(rng.randbytes(min(piece, n - i)) for i in range(0, n, piece))


def vectors(rng, n):
    buf = bytearray(randbytes(rng, n * VEC))
    buf[3::4] = bytes(buf[3::4]).translate(EXPONENT)
    return buf


def payload(rng, n):
    words = [b"title", b"category", b"price", b"alpha", b"beta", b"gamma", b"delta", b"vector", b"qdrant"]
    out = io.BytesIO()
    for i in range(n):
        out.write(b'{"id":%d,"title":"%s %s","category":"%s","price":%d.%02d}\n' % (
            i, rng.choice(words), rng.choice(words), rng.choice(words), rng.randrange(1000), rng.randrange(100)))
    return bytearray(out.getvalue())


def add(tar, name, data, mtime):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(bytes(data)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gib", type=float, default=1.0, help="approximate size of day 0")
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    n = int(a.gib * (1 << 30) * 0.8 / VEC)
    seg = str(uuid.UUID(int=rng.getrandbits(128)))
    vecs = vectors(rng, n)
    links = bytearray(randbytes(rng, n * 32))
    pay = payload(rng, n // 4)
    flags = bytearray(n // 8 + 1)
    for day in range(a.days):
        if day > 0:
            count = len(vecs) // VEC
            # Rewrite 2 %: as in Qdrant, an updated point moves (copy-on-write)
            # to the appendable end; its old slot is only flagged deleted.
            moved = [rng.randrange(count) for _ in range(count * 2 // 100)]
            for i in moved:
                flags[i // 8] |= 1 << (i % 8)
            new = count * 5 // 100  # 5 % new points
            vecs += vectors(rng, new + len(moved))
            new += len(moved)
            flags += bytearray(new // 8 + 1)
            for _ in range(len(vecs) // VEC // 100):  # delete 1 %
                i = rng.randrange(len(vecs) // VEC)
                flags[i // 8] |= 1 << (i % 8)
            for _ in range(len(links) // 4096 // 5):  # links: ~20 % of pages touched
                p = rng.randrange(len(links) // 4096) * 4096
                links[p:p + 512] = rng.randbytes(512)
            links += randbytes(rng, new * 32)
            pay += payload(rng, new // 4)
        if day == 4:  # optimizer: new segment, vectors re-ordered in runs, links rebuilt
            seg = str(uuid.UUID(int=rng.getrandbits(128)))
            run = 4096 * VEC
            runs = [vecs[i:i + run] for i in range(0, len(vecs), run)]
            rng.shuffle(runs)
            vecs = bytearray(b"".join(runs))
            links = bytearray(randbytes(rng, len(links)))
        d = os.path.join(a.out, "day%d" % day)
        os.makedirs(d, exist_ok=True)
        mtime = 1_764_000_000 + day * 86400
        with tarfile.open(os.path.join(d, "collection.snapshot"), "w", format=tarfile.GNU_FORMAT) as tar:
            base = "0/segments/%s/files/" % seg
            add(tar, base + "vector_storage/vectors/chunk_0.mmap", vecs, mtime)
            add(tar, base + "vector_storage/deleted/flags_a.dat", flags, mtime)
            add(tar, base + "vector_index/links_compressed.bin", links, mtime)
            add(tar, base + "payload_storage/page_0.dat", pay, mtime)
            add(tar, base + "segment.json", b'{"version":%d}' % day, mtime)
            add(tar, "0/wal/open-1", rng.randbytes(1 << 20), mtime)
            add(tar, "config.json", b'{"params":{"vectors":{"size":128}}}', 0)
        print("day%d: %.2f GiB" % (day, os.path.getsize(os.path.join(d, "collection.snapshot")) / (1 << 30)), flush=True)


if __name__ == "__main__":
    main()
