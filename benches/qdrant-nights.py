#!/usr/bin/env python3
"""Generates snapshot series from the real Qdrant server: nights of writes
with the optimizer active, a snapshot after each night.

Starts its own nodes (../shared/bin/qdrant-up.sh), creates a collection,
loads it, then for each night upserts new points, rewrites the vectors of
existing points, deletes points, waits until the collection is green (the
optimizer done) and takes the night's snapshots:

  collection shapes: one node, `dayN/collection.snapshot` (POST, download, delete);
  cluster shapes:    three nodes, one shard per node, `dayN/shardS.snapshot`
                     streamed from the node holding shard S (GET .../shards/S/snapshot).

Writes OUT/manifest.json: the shape, and per night the points count, the
segments, every snapshot's size, and the segment ids the optimizer created or
dropped since the night before (a rebuild shows up there).

Vectors are normalised float32 clustered around 64 centres; payloads carry a
text title, an indexed keyword category, a float price and an int timestamp.
Everything is seeded: a shape and seed always drive the same operations
(Qdrant's own HNSW and segment ids still vary from run to run).

With --each-night CMD, CMD runs (through the shell) once each night is
green, with NIGHT, QDRANT_URLS (comma-separated) and DROPPED (segments the
optimizer dropped since the night before) in its environment: a bench
backs up the live cluster there. --no-files skips the snapshot files.

Usage: benches/qdrant-nights.py OUT --shape NAME [--nights N] [--seed S] [--port-base P]
                                [--each-night CMD] [--no-files] [--points N]
       benches/qdrant-nights.py --list
Needs only Python 3 and the Qdrant binary in ../shared/bin (or QDRANT_BIN).
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# name: (nodes/shards, dim, initial points, new %, rewritten %, deleted %, what it stands for)
SHAPES = {
    "d768": (1, 768, 30000, 4.0, 2.0, 1.0,
             "the reported case: dim 768, 30,000 points, 4 % new, 2 % rewritten, 1 % deleted a night"),
    "d128-heavy": (1, 128, 100000, 8.0, 4.0, 2.0, "small vectors, many points, heavy churn"),
    "d1536-light": (1, 1536, 15000, 1.0, 0.5, 0.25, "large vectors, light churn"),
    "d768-cluster": (3, 768, 30000, 4.0, 2.0, 1.0, "3 nodes, 3 shards, streamed shard snapshots"),
    "d768-cluster-quiet": (3, 768, 30000, 1.0, 0.0, 0.0,
                           "3 nodes, 3 shards, a quiet night: 1 % new points, nothing rewritten or deleted"),
    "d768-cluster-quiet-rewrites": (3, 768, 30000, 0.5, 0.25, 0.25,
                                    "3 nodes, 3 shards, a quiet night of 1 %: new, rewritten and deleted points"),
    "tiny": (1, 64, 3000, 4.0, 2.0, 1.0, "a quick smoke shape"),
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("vector shard segment cluster replica payload index graph point query filter score "
         "embedding search storage night backup restore chunk pack").split()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Node:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, method, path, body=None, timeout=600):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r).get("result")
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{method} {self.url}{path}: HTTP {e.code}: {e.read()[:300]!r}")

    def download(self, path, dest):
        with urllib.request.urlopen(self.url + path, timeout=3600) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f, 4 << 20)


class Data:
    """Seeded vectors and payloads."""

    def __init__(self, dim, seed):
        self.dim = dim
        self.rng = random.Random(seed)
        self.centres = [[random.Random(1000 + c).gauss(0, 1) for _ in range(dim)] for c in range(64)]

    def vector(self, i):
        g = self.rng.gauss
        v = [x + 0.3 * g(0, 1) for x in self.centres[i % 64]]
        n = math.sqrt(sum(x * x for x in v))
        return [round(x / n, 6) for x in v]

    def point(self, i, night):
        words = " ".join(self.rng.choice(WORDS) for _ in range(8))
        return {"id": i, "vector": self.vector(i),
                "payload": {"title": f"{words} {i}", "category": "c%d" % (i % 17),
                            "price": round(self.rng.uniform(1, 500), 2), "ts": 1700000000 + night * 86400 + i}}


def wait_green(nodes, coll):
    """Until every node reports the collection green twice in a row (optimizers done)."""
    calm = 0
    for _ in range(3600):
        states = [n.call("GET", f"/collections/{coll}")["status"] for n in nodes]
        calm = calm + 1 if all(s == "green" for s in states) else 0
        if calm >= 2:
            return
        time.sleep(1)
    raise SystemExit("the collection did not turn green within an hour")


def segments_of(nodes, coll):
    """Segment ids seen in the nodes' telemetry, per shard."""
    out = {}
    for n in nodes:
        t = n.call("GET", "/telemetry?details_level=6")
        for c in t.get("collections", {}).get("collections", []):
            if c.get("id") != coll:
                continue
            for shard in c.get("shards", []):
                local = shard.get("local") or {}
                segs = [s.get("info", {}).get("uuid") or s.get("info", {}).get("segment_id")
                        for s in local.get("segments", [])]
                out[str(shard.get("id"))] = sorted(filter(None, map(str, segs)))
    return out


def upsert(node, coll, points):
    for k in range(0, len(points), 256):
        node.call("PUT", f"/collections/{coll}/points?wait=true", {"points": points[k:k + 256]})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?")
    p.add_argument("--shape", default="d768")
    p.add_argument("--nights", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port-base", type=int, default=36333)
    p.add_argument("--list", action="store_true", help="list the shapes")
    p.add_argument("--each-night", help="a shell command run after each night, on the live cluster")
    p.add_argument("--no-files", action="store_true", help="take no snapshot files")
    p.add_argument("--points", type=int, help="initial points instead of the shape's")
    a = p.parse_args()
    if a.list or not a.out:
        for k, v in SHAPES.items():
            print(f"{k:14} nodes {v[0]} dim {v[1]:5} points {v[2]:7} churn {v[3]}/{v[4]}/{v[5]} %  {v[6]}")
        return
    if a.shape not in SHAPES:
        raise SystemExit(f"unknown shape {a.shape}; --list shows them")
    nodes_n, dim, initial, new_pct, upd_pct, del_pct, _ = SHAPES[a.shape]
    initial = a.points or initial
    up = os.environ.get("QDRANT_UP", os.path.join(ROOT, "..", "shared", "bin", "qdrant-up.sh"))
    if not os.path.exists(up):
        raise SystemExit(f"no {up}: the generator needs the Qdrant binary in ../shared/bin")
    os.makedirs(a.out, exist_ok=True)
    qdir = tempfile.mkdtemp(prefix="cairn-nights-")
    env = dict(os.environ, QDRANT__SERVICE__MAX_REQUEST_SIZE_MB="256")
    urls = subprocess.run([up, qdir, str(nodes_n), str(a.port_base)], check=True, capture_output=True,
                          text=True, env=env).stdout.strip().split(",")
    nodes = [Node(u) for u in urls]
    coll = "docs"
    try:
        lead = nodes[0]
        lead.call("PUT", f"/collections/{coll}", {"vectors": {"size": dim, "distance": "Cosine"},
                                                 "shard_number": nodes_n, "replication_factor": 1})
        lead.call("PUT", f"/collections/{coll}/index?wait=true", {"field_name": "category", "field_schema": "keyword"})
        data = Data(dim, a.seed)
        ops = random.Random(a.seed * 7919)
        t0 = time.time()
        live = list(range(initial))
        next_id = initial
        log(f"{a.shape}: loading {initial} points of dim {dim} into {nodes_n} node(s)")
        upsert(lead, coll, [data.point(i, 0) for i in live])
        manifest = {"shape": a.shape, "dim": dim, "nodes": nodes_n, "initial_points": initial,
                    "churn_percent": {"new": new_pct, "rewritten": upd_pct, "deleted": del_pct},
                    "seed": a.seed, "nights": []}
        with urllib.request.urlopen(lead.url + "/", timeout=30) as r:
            manifest["qdrant"] = json.load(r).get("version")
        prev = None
        for night in range(a.nights + 1):
            if night > 0:
                n = len(live)
                k_new, k_upd, k_del = (round(n * x / 100) for x in (new_pct, upd_pct, del_pct))
                fresh = list(range(next_id, next_id + k_new))
                next_id += k_new
                rewritten = ops.sample(live, k_upd)
                deleted = ops.sample(live, k_del)
                upsert(lead, coll, [data.point(i, night) for i in fresh + rewritten])
                dset = set(deleted)
                for k in range(0, len(deleted), 1000):
                    lead.call("POST", f"/collections/{coll}/points/delete?wait=true",
                              {"points": deleted[k:k + 1000]})
                live = [i for i in live if i not in dset] + fresh
            wait_green(nodes, coll)
            day = os.path.join(a.out, f"day{night}")
            os.makedirs(day, exist_ok=True)
            files = {}
            if a.no_files:
                pass
            elif nodes_n == 1:
                snap = lead.call("POST", f"/collections/{coll}/snapshots?wait=true")
                dest = os.path.join(day, "collection.snapshot")
                lead.download(f"/collections/{coll}/snapshots/{snap['name']}", dest)
                lead.call("DELETE", f"/collections/{coll}/snapshots/{snap['name']}?wait=true")
                files["collection.snapshot"] = os.path.getsize(dest)
            else:
                for node in nodes:
                    info = node.call("GET", f"/collections/{coll}/cluster")
                    for s in info["local_shards"]:
                        sid = s["shard_id"]
                        dest = os.path.join(day, f"shard{sid}.snapshot")
                        node.download(f"/collections/{coll}/shards/{sid}/snapshot", dest)
                        files[f"shard{sid}.snapshot"] = os.path.getsize(dest)
            segs = segments_of(nodes, coll)
            changes = {}
            if prev is not None:
                for shard, now in segs.items():
                    before = set(prev.get(shard, []))
                    changes[shard] = {"created": sorted(set(now) - before), "dropped": sorted(before - set(now))}
            prev = segs
            count = lead.call("POST", f"/collections/{coll}/points/count", {"exact": True})["count"]
            manifest["nights"].append({"night": night, "points": count, "segments": segs,
                                       "segment_changes": changes, "files": files})
            total = sum(files.values())
            rebuilt = sum(len(c["dropped"]) for c in changes.values())
            if a.each_night:
                subprocess.run(a.each_night, shell=True, check=True,
                               env=dict(os.environ, NIGHT=str(night), QDRANT_URLS=",".join(urls),
                                        DROPPED=str(rebuilt)))
            log(f"  night {night}: {count} points, {sum(len(s) for s in segs.values())} segments "
                f"({rebuilt} dropped since the night before), {total / 2**20:.1f} MiB, {time.time() - t0:.0f} s")
        with open(os.path.join(a.out, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
    finally:
        subprocess.run([up, "--down", qdir], check=False)
        shutil.rmtree(qdir, ignore_errors=True)


if __name__ == "__main__":
    main()
