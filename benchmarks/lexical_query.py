"""The lexical channel's FTS5 query on a large store: ranking the shared index first, then joining
the top rows (`Store.lexical`), against joining every match to its row before ranking (the query
it replaced, and still its fallback when other users' rows crowd the top).

    .venv/bin/python benchmarks/lexical_query.py --store /tmp/rs/reopen.db [--questions 200] [--json PATH]

The store is one made by `benchmarks/reopen.py` (10^5 synthetic train-split facts, one user). The
questions are the generator's for those facts, reduced to their content words as `Memory._lexical`
does; limit 64, as a fact store's candidate pool. The two queries alternate question by question;
reported are the median and p95 milliseconds of each and whether they returned the same rows.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from scale import facts_and_questions

from ams.session import fold
from ams.store import Store
from ams.turns import STOPWORDS

JOINED = ("SELECT m.id, -bm25(memories_fts) AS s FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid"
          " WHERE memories_fts MATCH ? AND m.user_id = ? ORDER BY s DESC, m.seq LIMIT ?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    store = Store.open(args.store)
    user = store.users()[0]
    n = store.count(user)
    _, questions = facts_and_questions(n)
    times: dict[str, list[float]] = {"ranked first (Store.lexical)": [], "joined first (before)": []}
    same = 0
    asked = 0
    for q in (questions * (1 + args.questions // max(len(questions), 1)))[: args.questions]:
        terms = [w for w in dict.fromkeys(re.findall(r"[^\W_]+", fold(q))) if len(w) > 1 and w not in STOPWORDS]
        if not terms:
            continue
        match = " OR ".join(f'"{t}"' for t in terms)
        t = time.perf_counter()
        got = store.lexical(user, terms, args.limit)
        times["ranked first (Store.lexical)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        want = store.db.execute(JOINED, [match, user, args.limit]).fetchall()
        times["joined first (before)"].append(time.perf_counter() - t)
        same += [m for m, _ in got] == [m for m, _ in want]
        asked += 1
    report = {"command": "benchmarks/lexical_query.py " + " ".join(sys.argv[1:]), "memories": n,
              "questions": asked, "limit": args.limit, "same_rows": same}
    for k, v in times.items():
        v.sort()
        report[k] = {"p50_ms": round(1000 * statistics.median(v), 2), "p95_ms": round(1000 * v[int(0.95 * len(v))], 2)}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
