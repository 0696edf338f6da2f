#!/usr/bin/env python3
"""Loads points into a Qdrant collection over its REST API (standard library only).

  qdrant-load.py URL COLLECTION FROM TO SEED [--dim D] [--create SHARDS,RF]

Upserts points FROM..TO (ids) with unit vectors clustered around 64 centres
(SEED varies the vectors: the same ids with another seed are rewrites) and a
payload {category, n}. --create first creates the collection (cosine, with a
keyword index on category).
"""
import argparse, json, math, random, urllib.request

p = argparse.ArgumentParser()
p.add_argument("url"); p.add_argument("collection")
p.add_argument("first", type=int); p.add_argument("last", type=int); p.add_argument("seed", type=int)
p.add_argument("--dim", type=int, default=128)
p.add_argument("--create", metavar="SHARDS,RF")
a = p.parse_args()

def call(method, path, body):
    req = urllib.request.Request(a.url.rstrip("/") + path, data=json.dumps(body).encode(), method=method,
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))

if a.create:
    shards, rf = (int(x) for x in a.create.split(","))
    call("PUT", f"/collections/{a.collection}",
         {"vectors": {"size": a.dim, "distance": "Cosine"}, "shard_number": shards, "replication_factor": rf})
    call("PUT", f"/collections/{a.collection}/index?wait=true", {"field_name": "category", "field_schema": "keyword"})

rnd = random.Random(a.seed)
centres = [[random.Random(c).gauss(0, 1) for _ in range(a.dim)] for c in range(64)]
def vec(i):
    v = [x + 0.3 * rnd.gauss(0, 1) for x in centres[i % 64]]
    n = math.sqrt(sum(x * x for x in v))
    return [round(x / n, 6) for x in v]
for k in range(a.first, a.last, 1000):
    ids = range(k, min(k + 1000, a.last))
    call("PUT", f"/collections/{a.collection}/points?wait=true",
         {"points": [{"id": i, "vector": vec(i), "payload": {"category": "c%d" % (i % 17), "n": i}} for i in ids]})
