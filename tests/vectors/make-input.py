#!/usr/bin/env python3
"""Writes the inputs of the test vectors: two nights of a tiny Qdrant-like
shard snapshot (a tar with a vector storage of 256 float32 vectors of
dimension 32, its config, a segment file and a shard config), the second
with 10 vectors changed. Deterministic: fixed seed, mtimes 0, owner 0.

usage: make-input.py DIR   (writes DIR/night1.tar and DIR/night2.tar)
"""
import io
import json
import random
import struct
import sys
import tarfile

DIM, COUNT = 32, 256


def vectors(night):
    rng = random.Random(7)
    data = [[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(COUNT)]
    if night == 2:
        rng = random.Random(8)
        for i in rng.sample(range(COUNT), 10):
            data[i] = [rng.uniform(-1, 1) for _ in range(DIM)]
    return b"".join(struct.pack("<%df" % DIM, *v) for v in data)


def member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def night(n):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        member(tar, "shard_config.json", json.dumps({"type": "local"}).encode())
        seg = "segments/0b5e-seg/"
        member(tar, seg + "segment.json", json.dumps({"version": n, "dim": DIM}).encode())
        vs = seg + "vector_storage/vectors/"
        member(tar, vs + "config.json",
               json.dumps({"chunk_size_bytes": COUNT * DIM * 4, "chunk_size_vectors": COUNT}).encode())
        member(tar, vs + "chunk_0.mmap", vectors(n))
    return out.getvalue()


for n in (1, 2):
    with open("%s/night%d.tar" % (sys.argv[1], n), "wb") as f:
        f.write(night(n))
