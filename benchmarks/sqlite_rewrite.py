"""Why vector rows are rewritten with INSERT OR REPLACE: page usage after rows shrink.

    .venv/bin/python benchmarks/sqlite_rewrite.py

4,000 rows of 1,600-byte blobs (raw vectors) are rewritten as 62-byte codes, once by an in-place
upsert and once by INSERT OR REPLACE, then 36,000 more 62-byte rows are appended; prints the
table's pages, payload and unused bytes (SQLite's dbstat) and the file size for each.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile


def run(mode: str, path: str) -> tuple:
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE v (memory_id TEXT NOT NULL, field TEXT NOT NULL, data BLOB, PRIMARY KEY (memory_id, field))")
    rows = lambda lo, hi, size: [(f"{i:032d}", "content", os.urandom(size)) for i in range(lo, hi)]  # noqa: E731
    c.executemany("INSERT INTO v VALUES (?, ?, ?)", rows(0, 4000, 1600))
    if mode == "upsert":
        c.executemany("INSERT INTO v VALUES (?, ?, ?) ON CONFLICT(memory_id, field) DO UPDATE SET data = excluded.data",
                      rows(0, 4000, 62))
    else:
        c.executemany("INSERT OR REPLACE INTO v VALUES (?, ?, ?)", rows(0, 4000, 62))
    c.executemany("INSERT INTO v VALUES (?, ?, ?)", rows(4000, 40000, 62))
    c.commit()
    pages, payload, unused = c.execute("SELECT sum(pgsize), sum(payload), sum(unused) FROM dbstat WHERE name = 'v'").fetchone()
    c.close()
    return pages, payload, unused, os.path.getsize(path)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("upsert", "replace"):
            pages, payload, unused, size = run(mode, os.path.join(tmp, f"{mode}.db"))
            print(f"{mode:8s} table pages {pages / 1e6:.1f} MB  payload {payload / 1e6:.1f} MB  "
                  f"unused {unused / 1e6:.1f} MB  file {size / 1e6:.1f} MB")
