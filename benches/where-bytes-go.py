#!/usr/bin/env python3
"""Where do each day's new bytes go? For a snapshot series (dayN/*.snapshot),
chunks every day as a default repository would and attributes the chunks not
seen on any earlier day to the tar member (nested segment tars included) they
belong to, grouped by Qdrant file kind. Raw (uncompressed) bytes.

Usage: benches/where-bytes-go.py SERIES_DIR   (run from the project root)
"""
import collections
import glob
import os
import subprocess
import sys
import tarfile

KINDS = [("wal", "/wal/"), ("vectors", "vector_storage/"), ("hnsw", "vector_index/"),
         ("payload", "payload_"), ("id tracker", "id_tracker"), ("other", "")]


def members(path):
    """(start, end, name) of every member's bytes, headers included, nested tars expanded."""
    out = []
    with open(path, "rb") as f:
        def walk(fileobj, base, prefix):
            with tarfile.open(fileobj=fileobj, mode="r:") as t:
                prev_end = None
                for m in t.getmembers():
                    stored = m.size if not m.issparse() else sum(n for _, n in m.sparse)
                    start, end = base + m.offset, base + m.offset_data + stored
                    out.append((start, end, prefix + m.name))
                    if m.name.endswith(".tar") and m.isfile():
                        sub = t.extractfile(m)
                        walk(sub, base + m.offset_data, prefix + m.name + "/")
        walk(f, 0, "")
    # Innermost member wins: sort so nested ranges come after their parent.
    return sorted(out, key=lambda r: (r[0], -r[1]))


def kind(name):
    for k, needle in KINDS:
        if needle in name:
            return k
    return "other"


def main():
    series = sys.argv[1]
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "chunk-list"], check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/cairn-target"))
    tool = os.path.join(target, "release", "examples", "chunk-list")
    seen = set()
    days = sorted(glob.glob(os.path.join(series, "day*")), key=lambda d: int(d.rsplit("day", 1)[1]))
    print("| day | new MiB | " + " | ".join(k for k, _ in KINDS) + " | new chunks | chunks |")
    print("|---|---|" + "---|" * len(KINDS) + "---|---|")
    growth = collections.Counter()
    growth_chunks = 0
    for i, d in enumerate(days):
        by_kind = collections.Counter()
        new_chunks = chunks = 0
        for snap in sorted(glob.glob(os.path.join(d, "*.snapshot"))):
            ranges = members(snap)
            lines = subprocess.run([tool, snap], check=True, capture_output=True, text=True).stdout.split("\n")
            for line in filter(None, lines):
                off, n, cid = line.split()
                off, n = int(off), int(n)
                chunks += 1
                if cid in seen:
                    continue
                seen.add(cid)
                new_chunks += 1
                owner = "tar headers and padding"
                for s, e, name in ranges:
                    if s <= off < e:
                        owner = name  # later (nested) matches override
                by_kind[kind(owner) if owner != "tar headers and padding" else "other"] += n
        total = sum(by_kind.values())
        if i > 0:
            growth.update(by_kind)
            growth_chunks += new_chunks
        print(f"| {os.path.basename(d)} | {total / 2**20:.2f} | " +
              " | ".join(f"{by_kind[k] / 2**20:.2f}" for k, _ in KINDS) + f" | {new_chunks} | {chunks} |")
    if len(days) > 1:
        print(f"| nights 1..{len(days) - 1} | {sum(growth.values()) / 2**20:.2f} | " +
              " | ".join(f"{growth[k] / 2**20:.2f}" for k, _ in KINDS) + f" | {growth_chunks} | |")


if __name__ == "__main__":
    main()
