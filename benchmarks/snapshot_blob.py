"""What a reopen snapshot of the in-memory keys would cost: one SQLite blob of N memories' keys.

    .venv/bin/python benchmarks/snapshot_blob.py --n 100000 [--repeats 3]

A store's in-memory retrieval keys are float32: 384 topic + 384 context + 16 temporal numbers a
memory (314 MB at 10^5). This writes random keys of that shape as one safetensors blob into a
fresh WAL-mode SQLite file, then times, in fresh connections, reading the blob, its CRC-32 and
loading it back into arrays: the floor under a reopen that restored its keys from a snapshot
instead of decoding every row (the reopen target at 10^5 is 1 s; BENCHMARKS.md, "Scale").
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from safetensors.numpy import load, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    keys = {"topic": rng.random((args.n, 384), dtype=np.float32), "context": rng.random((args.n, 384), dtype=np.float32),
            "temporal": rng.random((args.n, 16), dtype=np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE snapshot (user_id TEXT PRIMARY KEY, data BLOB NOT NULL, checksum INTEGER NOT NULL)")
        t = time.perf_counter()
        blob = save(keys)
        conn.execute("INSERT INTO snapshot VALUES ('u', ?, ?)", [blob, zlib.crc32(blob)])
        write_s = time.perf_counter() - t
        conn.close()
        reads = []
        for _ in range(args.repeats):
            conn = sqlite3.connect(path, isolation_level=None)
            t = time.perf_counter()
            data, crc = conn.execute("SELECT data, checksum FROM snapshot WHERE user_id = 'u'").fetchone()
            if zlib.crc32(data) != crc:
                raise RuntimeError("snapshot checksum mismatch")
            load(data)
            reads.append(time.perf_counter() - t)
            conn.close()
    out = {"n": args.n, "blob_mb": round(len(blob) / 1e6, 1), "write_s": round(write_s, 2),
           "read_check_load_s": [round(r, 2) for r in reads], "median_s": round(float(np.median(reads)), 2),
           "command": f"python benchmarks/snapshot_blob.py --n {args.n} --repeats {args.repeats}"}
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path(f"benchmarks/results/snapshot_blob_{args.n}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
