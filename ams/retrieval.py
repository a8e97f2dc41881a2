"""Retrieval: one index per bundle, candidates fused across bundles.

A `BundleIndex` wraps one bundle's unit `dirn` vectors: below `exact_below` rows it scans them all
exactly; above, a first stage proposes rows that are then scored exactly. The default first stage,
`CodedScan`, scans every row in 4-bit product-quantised form (FAISS fast scan); the alternative, a
`DirectionTree`, is a hierarchical spherical k-means descended by beam search, whose reached
leaves are scored. `fuse` unions every bundle's candidates and ranks them by the weighted sum of
all bundles' exact scores, so a memory found by one bundle is still scored by the others.
`FlatIndex` is FAISS exact inner-product search: the `flat` mode and the reference both first
stages are tested against.
Glossary: N rows, d width, Q queries, C candidates.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from .kakeya.kmeans import SphericalKMeans


class DirectionTree:
    """Hierarchical spherical k-means with beam search, kept as flat arrays.

    Nodes are numbered breadth-first, so a node's children are one contiguous id range and a
    search is a few vectorised steps per level rather than a Python loop over nodes. Each inner
    node's k-means trains on a seeded sample of at most `train_sample` of its rows, then assigns
    all of them: a build costs about depth x N x branching x d multiply-adds.

    Args:
        branching: children of the root (deeper nodes split into as many leaves as they need, at most 256).
        leaf_size: a node with at most this many rows is a leaf.
        beam: nodes kept per level while descending.
        seed: clustering seed; equal inputs give equal trees.
        train_sample: most rows one node's k-means trains on.
    """

    def __init__(self, *, branching: int = 16, leaf_size: int = 64, beam: int = 8, seed: int = 0,
                 train_sample: int = 2048, max_depth: int = 2) -> None:
        self.branching, self.leaf_size, self.beam, self.seed = branching, leaf_size, beam, seed
        self.max_depth = max_depth
        self.train_sample = train_sample
        self.x: np.ndarray | None = None  # (N, d) the indexed rows
        self.centroids: np.ndarray | None = None  # (M, d) one unit centroid per node, breadth-first
        self.child_lo: np.ndarray | None = None  # (M,) node i's children are child_lo[i]:child_hi[i]
        self.child_hi: np.ndarray | None = None  # (M,) equal to child_lo for a leaf
        self.row_lo: np.ndarray | None = None  # (M,) leaf i's rows are order[row_lo[i]:row_hi[i]]
        self.row_hi: np.ndarray | None = None
        self.order: np.ndarray | None = None  # (N,) row indices grouped by leaf

    def build(self, x: np.ndarray) -> DirectionTree:
        """Index unit rows `x` (N, d)."""
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        cents, child_lo, child_hi, leaf_rows = [], [], [], []
        queue = deque([(np.arange(len(self.x)), 0)])  # (rows, depth); node id = dequeue order
        next_id = 1
        while queue:
            rows, depth = queue.popleft()
            c = self.x[rows].sum(0)
            cents.append(c / max(float(np.linalg.norm(c)), 1e-12))
            groups = self._split(rows, depth) if len(rows) > self.leaf_size and depth < self.max_depth else []
            if len(groups) > 1:
                child_lo.append(next_id)
                next_id += len(groups)
                child_hi.append(next_id)
                queue.extend((g, depth + 1) for g in groups)
                leaf_rows.append(rows[:0])
            else:  # small enough, or identical points that no split separates
                child_lo.append(0)
                child_hi.append(0)
                leaf_rows.append(rows)
        sizes = np.array([len(r) for r in leaf_rows], dtype=np.int64)
        self.row_hi = np.cumsum(sizes)
        self.row_lo = self.row_hi - sizes
        self.order = np.concatenate(leaf_rows).astype(np.int64)
        self.centroids = np.stack(cents).astype(np.float32)
        self.child_lo, self.child_hi = np.array(child_lo, dtype=np.int64), np.array(child_hi, dtype=np.int64)
        return self

    def _split(self, rows: np.ndarray, depth: int) -> list[np.ndarray]:
        xs = self.x[rows]
        train = xs
        if len(rows) > self.train_sample:
            rng = np.random.default_rng(self.seed + depth)
            train = xs[np.sort(rng.choice(len(rows), self.train_sample, replace=False))]
        # the root splits `branching` ways; below it, a node splits into as many leaves as it needs
        k = self.branching if depth == 0 else min(256, -(-len(rows) // self.leaf_size))
        km = SphericalKMeans(k, n_iter=10, seed=self.seed + depth, init="random").train(train)
        _, assign = km.assign(xs)
        by = np.argsort(assign, kind="stable")
        bounds = np.cumsum(np.bincount(assign, minlength=len(km.centroids)))[:-1]
        return [g for g in np.split(rows[by], bounds) if len(g)]

    def search(self, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`n` rows for query `q` (d,) among the reached leaves: (scores D, rows I)."""
        rows = self.reach(q)
        scores = self.x[rows] @ q
        top = np.argsort(-scores, kind="stable")[:n]
        return scores[top], rows[top]

    def reach(self, q: np.ndarray) -> np.ndarray:
        """The rows under the leaves that a beam search for `q` (d,) reaches: what `search` scans."""
        frontier = np.zeros(1, dtype=np.int64)
        leaves = []
        while frontier.size:
            inner = self.child_hi[frontier] > self.child_lo[frontier]
            leaves.append(frontier[~inner])
            frontier = frontier[inner]
            if not frontier.size:
                break
            kids = _ranges(self.child_lo[frontier], self.child_hi[frontier])
            sims = self.centroids[kids] @ q
            frontier = kids[np.argsort(-sims, kind="stable")[: self.beam]]
        leaf = np.concatenate(leaves)
        return self.order[_ranges(self.row_lo[leaf], self.row_hi[leaf])]


def _grown(a: np.ndarray, n: int, fill: int | None = 0) -> np.ndarray:
    """`a`, or a copy with room for at least `n` entries along its first axis: at least double
    the capacity (n single appends then copy O(n) in all, not O(n^2); a first bulk add into an
    empty array gets exactly `n`), the new entries set to `fill`, or left unwritten with None
    (their pages are then not touched, so not resident, until rows are written there)."""
    if n <= len(a):
        return a
    out = np.empty((max(n, 2 * len(a)), *a.shape[1:]), dtype=a.dtype)  # written once, not filled first
    out[: len(a)] = a
    if fill is not None:
        out[len(a) :] = fill
    return out


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], hi[i]) over i, without a Python loop."""
    sizes = hi - lo
    total = int(sizes.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
    return starts + np.arange(total)


SUPERSEDE_MARGIN = 1e-3  # how far above the row it supersedes a successor ranks (see `fuse`)
SCAN_MIN_ROWS = 1024  # fewer live rows than this are always scanned exactly (and codebooks need data)
STOP_CHUNK = 16_384  # rows a background build codes between looks at its stop flag (about 0.1 s at d = 384)


class BuildStopped(Exception):
    """A background scan build was told to stop (its index was closed)."""


class CodedScan:
    """Every row scanned in 4-bit product-quantised form (FAISS fast scan); the caller re-scores
    the best `rerank` exactly.

    A row is coded as d/2 sub-vectors of 2 dimensions, each one of 16 centroids: d/4 bytes (96 B
    for 384-wide keys), so 10^5 rows are 9.6 MB scanned in well under a millisecond, and no
    partition can hide a match the way a tree's unreached leaf does. Codes live at positions;
    `rows` maps a position to its row. A replaced or removed row's position is retired (FAISS's
    fast-scan layout cannot overwrite one) and a replacement is appended; `recode` drops the
    retired positions. Codebooks train once on a seeded sample.
    """

    def __init__(self, d: int, *, seed: int = 0, train_sample: int = 4096) -> None:
        self.d, self.seed, self.train_sample = d, seed, train_sample
        self.m = d // 2 if d % 2 == 0 else d  # sub-quantizers: 2 dimensions each where d allows
        self.pq: faiss.IndexPQFastScan | None = None
        self.trained_on = 0  # live rows when the codebooks trained
        self._rows = np.zeros(0, dtype=np.int64)  # (capacity,) position -> row; the first P are in use
        self._live = np.zeros(0, dtype=bool)  # (capacity,) the position holds its row's current vector
        self.positions = 0  # P
        self.pos_of = np.zeros(0, dtype=np.int64)  # (rows,) row -> its live position, -1 for none
        self.retired = 0  # positions whose row was replaced or removed

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: self.positions]

    @property
    def live(self) -> np.ndarray:
        return self._live[: self.positions]

    def build(self, x: np.ndarray, alive: np.ndarray, *, stop: threading.Event | None = None) -> CodedScan:
        """Train the codebooks on a sample of the live rows of `x` (N, d), then code them all.
        Rows are coded `STOP_CHUNK` at a time; with `stop`, it raises `BuildStopped` once that is set."""
        keep = np.flatnonzero(alive)
        sample = keep
        if len(keep) > self.train_sample:
            sample = np.sort(np.random.default_rng(self.seed).choice(keep, self.train_sample, replace=False))
        self.pq = faiss.IndexPQFastScan(self.d, self.m, 4, faiss.METRIC_INNER_PRODUCT)
        # 10 Lloyd steps on at most 1,024 points per 16-centroid codebook: 0.15 s at 10^5 rows where
        # FAISS's defaults (25 steps, 4,096 points) took 1.3 s, at equal recall (BENCHMARKS.md, Scale)
        self.pq.pq.cp.seed, self.pq.pq.cp.niter, self.pq.pq.cp.max_points_per_centroid = self.seed, 10, 64
        self.pq.train(np.ascontiguousarray(x[sample]))
        self.trained_on = len(keep)
        return self.recode(x, alive, stop=stop)

    def recode(self, x: np.ndarray, alive: np.ndarray, *, stop: threading.Event | None = None) -> CodedScan:
        """Code the live rows afresh with the trained codebooks: retired positions are dropped."""
        self.pq.reset()
        self.positions = 0
        self.pos_of = np.full(len(x), -1, dtype=np.int64)
        self.retired = 0
        keep = np.flatnonzero(alive)
        for i in range(0, len(keep), STOP_CHUNK):  # the same codes as one add: each row is coded alone
            if stop is not None and stop.is_set():
                raise BuildStopped("the index was closed while its scan was being built")
            rows = keep[i : i + STOP_CHUNK]
            self.add(rows, x[rows])
        return self

    def add(self, rows: np.ndarray, x: np.ndarray) -> None:
        """Code rows `rows` (R,) with vectors `x` (R, d); a row already coded is retired first."""
        if not len(rows):
            return
        self.pos_of = _grown(self.pos_of, int(rows.max()) + 1, fill=-1)
        self.retire(rows)
        start, end = self.positions, self.positions + len(rows)
        self._rows, self._live = _grown(self._rows, end), _grown(self._live, end)
        self.pq.add(np.ascontiguousarray(x, dtype=np.float32))
        self._rows[start:end], self._live[start:end] = rows, True
        self.positions = end
        self.pos_of[rows] = start + np.arange(len(rows))

    def retire(self, rows: np.ndarray) -> None:
        rows = rows[rows < len(self.pos_of)]
        pos = self.pos_of[rows]
        pos = pos[pos >= 0]
        self.live[pos] = False
        self.retired += len(pos)
        self.pos_of[rows] = -1

    def search(self, q: np.ndarray, n: int) -> np.ndarray:
        """Rows of the `n` live positions with the highest approximate inner product with `q` (d,)."""
        want = min(n + self.retired, self.positions)
        if want <= 0:
            return np.zeros(0, dtype=np.int64)
        _, pos = self.pq.search(np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1), want)
        pos = pos[0][pos[0] >= 0]
        return self.rows[pos[self.live[pos]]][:n]


@dataclass
class _ScanBuild:
    """A `CodedScan` being trained and coded in a thread from the first `rows` rows as they stood;
    `touched` collects the rows among them replaced or removed since, to be re-coded on adoption.
    Setting `stop` ends the build at its next chunk of rows (`BundleIndex.close`)."""

    scan: CodedScan
    rows: int
    touched: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None


class BundleIndex:
    """One bundle's retrieval keys: scanned exactly while small, through an approximate first
    stage with exact re-scoring when large.

    The first stage is `method`: "scan" (default) codes every row in 4-bit product-quantised form
    and re-scores the best `rerank` exactly (`CodedScan`); "tree" descends a `DirectionTree` and
    scores the rows under the reached leaves. On 10^5 real sentence vectors the scan found the
    exact top-10 (ties counted) in 0.9 ms a query, where the tree needed beam 256 and 11 ms for
    0.99 (BENCHMARKS.md, "Scale"). The tree scans exactly the rows added since its build and is
    rebuilt once they are a quarter of it; the scan codes rows as they come.

    With `background`, a scan is trained and coded in a thread (FAISS releases the GIL) instead of
    inside the search that needs it: until it is ready, searches use the previous scan, or, for the
    first one, score every row exactly. A build costs about 0.5 s a bundle at 10^5 rows and 8.6 s at
    10^6, which the first search after opening a store would otherwise wait for. Rows added,
    replaced or removed while it runs are brought into it when it is adopted.
    """

    def __init__(self, d: int, *, exact_below: int, method: str = "scan", rerank: int = 128,
                 branching: int = 16, leaf_size: int = 64, beam: int = 32, background: bool = False) -> None:
        if method not in ("scan", "tree"):
            raise ValueError(f"method must be 'scan' or 'tree', not {method!r}")
        self.d = d
        self.exact_below = exact_below
        self.method, self.rerank = method, rerank
        self._tree_args = dict(branching=branching, leaf_size=leaf_size, beam=beam)
        self._x = np.zeros((0, d), dtype=np.float32)  # capacity rows; the first `_n` are in use
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0
        self._live = 0  # rows alive
        self.version = 0  # changes with every add, replace and remove
        self.tree: DirectionTree | None = None
        self._built_rows = 0
        self.scan: CodedScan | None = None
        self.background = background
        self._build: _ScanBuild | None = None  # a scan being built in a thread

    @property
    def x(self) -> np.ndarray:
        """(rows, d) keys, a view: rows are never reordered, deleted rows stay (see `alive`)."""
        return self._x[: self._n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    def __len__(self) -> int:
        return self._live

    def add(self, x: np.ndarray, *, copy: bool = True) -> None:
        """Append rows; storage grows by doubling, so n single adds cost O(n) copies, not O(n^2).
        `copy=False` hands `x` over: an empty index keeps it as its storage, where a copy of a
        store's 10^5 keys is a 154 MB allocation (about 0.3 s of first-touch page faults here)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.d)
        need = self._n + len(x)
        if not copy and not len(self._x) and x.flags.c_contiguous and x.flags.writeable:
            self._x = x
        else:
            self._x = _grown(self._x, need, fill=None)  # rows past `_n` are never read
            self._x[self._n : need] = x
        self._alive = _grown(self._alive, need)
        self._alive[self._n : need] = True
        if self.scan is not None:
            self.scan.add(np.arange(self._n, need), x)
        self._n = need
        self._live += len(x)
        self.version += 1

    def replace(self, row: int, x: np.ndarray) -> None:
        """Replace a row's vector (an updated memory); a tree is rebuilt on the next search."""
        self.x[row] = x
        self.tree = None
        if self.scan is not None and self.alive[row]:  # a removed row stays out of the scan
            self.scan.add(np.array([row]), self.x[row : row + 1])
        if self._build is not None:
            self._build.touched.add(row)
        self.version += 1

    def remove(self, row: int) -> None:
        if not self.alive[row]:
            return
        self.alive[row] = False
        self._live -= 1
        if self.scan is not None:
            self.scan.retire(np.array([row]))
        if self._build is not None:
            self._build.touched.add(row)
        self.version += 1

    def wait(self) -> None:
        """Block until a scan being built in the background is ready, and adopt it."""
        if self._build is not None:
            self._build.done.wait()
            self._adopt()

    def close(self) -> None:
        """Stop a background build and wait for its thread to end (within a chunk of rows, about
        0.1 s, or the codebooks' training, about 0.15 s), so no thread outlives the index. The
        index itself stays usable: a later search that needs a scan starts a new build."""
        job, self._build = self._build, None
        if job is not None:
            job.stop.set()
            job.thread.join()

    def scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.x[rows] @ q

    def candidates(self, q: np.ndarray, n: int) -> np.ndarray:
        """Up to `n` live rows with the highest inner product with `q`, best first (exact scores;
        above `exact_below` rows, among those the first stage proposes)."""
        total = len(self.x)
        if total < self.exact_below or len(self) < SCAN_MIN_ROWS:
            return self._exact(q, n)
        if self.method == "scan":
            scan = self._scan()
            if scan is None:  # the first scan is still being built: score every row exactly
                return self._exact(q, n)
            rows = scan.search(q, max(self.rerank, n))
        else:
            if self.tree is None or total - self._built_rows > self._built_rows // 4:
                self.tree = DirectionTree(**self._tree_args).build(self.x)
                self._built_rows = total
            _, rows = self.tree.search(q, n + int((~self.alive[: self._built_rows]).sum()))
            tail = np.arange(self._built_rows, total)  # rows added since the build: exact scan
            rows = np.concatenate([rows, tail])
            rows = rows[self.alive[rows]]
        s = self.x[rows] @ q
        return rows[np.argsort(-s, kind="stable")[:n]]

    def _exact(self, q: np.ndarray, n: int) -> np.ndarray:
        """Up to `n` live rows by exact score, best first, ties in row order (as a stable sort of
        every live row would give), without gathering the keys or sorting them all."""
        n = min(n, len(self))
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        s = self.x @ q
        s[~self.alive] = -np.inf
        if n < len(self):  # every row reaching the n-th best score, ties at the boundary included
            rows = np.flatnonzero(s >= -np.partition(-s, n - 1)[n - 1])
        else:
            rows = np.flatnonzero(self.alive)
        return rows[np.argsort(-s[rows], kind="stable")[:n]]

    def _scan(self) -> CodedScan | None:
        """The coded scan, trained afresh each time the live rows grow fourfold, re-coded once
        retired positions are an eighth of it (at 10^5 rows a build costs the search that triggers it
        about 0.4 s a bundle, unless `background`). None while the first one is built in a thread."""
        self._adopt()
        live = len(self)
        if self.scan is None or live > 4 * self.scan.trained_on:
            if not self.background:
                self.scan = CodedScan(self.d).build(self.x, self.alive)
            elif self._build is None:
                self._start_build()
        elif self.scan.retired > max(1024, self.scan.positions // 8) and self._build is None:
            self.scan.recode(self.x, self.alive)
        return self.scan

    def _start_build(self) -> None:
        job = _ScanBuild(CodedScan(self.d), self._n)
        x, alive = self.x, self.alive.copy()  # rows changed after this point are re-coded on adoption

        def run() -> None:
            try:
                job.scan.build(x, alive, stop=job.stop)
            except BaseException as e:  # handed to the searching thread by _adopt
                job.error = e
            finally:
                job.done.set()

        self._build = job
        job.thread = threading.Thread(target=run, name="ams-scan-build", daemon=True)
        job.thread.start()

    def _adopt(self) -> None:
        """Take over a finished background scan, after coding the rows changed while it was built."""
        job = self._build
        if job is None or not job.done.is_set():
            return
        self._build = None
        if job.error is not None:
            raise job.error
        changed = np.union1d(np.fromiter(job.touched, dtype=np.int64, count=len(job.touched)),
                             np.arange(job.rows, self._n))
        alive = self.alive[changed]
        job.scan.retire(changed[~alive])
        job.scan.add(changed[alive], self.x[changed[alive]])
        self.scan = job.scan


def fuse(indexes: dict[str, BundleIndex], queries: dict[str, np.ndarray], weights: dict[str, float],
         *, k: int, candidates: int, extra: dict[str, tuple[np.ndarray, float]] | None = None,
         propose: np.ndarray | None = None, successor: Callable[[np.ndarray], np.ndarray] | None = None,
         ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Fused top-k rows over several bundles and channels scored outside them.

    Every bundle with a positive weight proposes `candidates` rows, and `propose` adds more (the
    lexical channel's hits); the union of live rows is scored by
    sum_b weights[b] * <queries[b], dirn_b> + sum_c w_c * extra_c[row], every score exact.

    Args:
        extra: channel -> (a score for every row (N,), or a function of the pool's rows giving
            theirs, and its weight).
        propose: more candidate rows.
        successor: rows (P,) -> the live row that supersedes each (a correction of it), or -1.
            Successors of the pool join it, and a successor's score is raised to just above its
            predecessor's where it was lower (the raise is reported as the "supersedes" channel).

    Returns:
        (fused scores (k,), rows (k,), per-channel scores {name: (k,)}), best first.
    """
    active = [b for b, w in weights.items() if w > 0]
    pools = [indexes[b].candidates(queries[b], candidates) for b in active]
    if propose is not None and len(propose):
        alive = next(iter(indexes.values())).alive
        pools.append(propose[alive[propose]])
    pool = np.unique(np.concatenate(pools)) if pools else np.zeros(0, dtype=np.int64)
    nxt = None if successor is None else successor(pool)
    while nxt is not None:  # successors join the pool, and theirs in turn (a correction of a correction)
        fresh = np.setdiff1d(nxt[nxt >= 0], pool)
        if not len(fresh):
            break
        pool = np.union1d(pool, fresh)
        nxt = successor(pool)
    per = {b: indexes[b].scores(queries[b], pool) for b in indexes}
    total = np.zeros(len(pool), dtype=np.float32)
    for b in active:
        total = total + weights[b] * per[b]
    for name, (scores, w) in (extra or {}).items():
        per[name] = np.asarray(scores(pool) if callable(scores) else scores[pool], dtype=np.float32)
        if w > 0:
            total = total + w * per[name]
    if nxt is not None:
        lifted = total.copy()
        for i in np.flatnonzero(nxt >= 0):  # the pool is in write order, so a chain lifts in order
            j = int(np.searchsorted(pool, nxt[i]))
            lifted[j] = max(lifted[j], lifted[i] + SUPERSEDE_MARGIN)
        per["supersedes"], total = lifted - total, lifted
    order = np.argsort(-total, kind="stable")[:k]
    return total[order], pool[order], {b: s[order] for b, s in per.items()}


class FlatIndex:
    """FAISS exact inner-product search over unit vectors (cosine)."""

    def __init__(self, x: np.ndarray) -> None:
        self.index = faiss.IndexFlatIP(x.shape[1])
        if len(x):
            self.index.add(np.ascontiguousarray(x, dtype=np.float32))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores D (Q, k), rows I (Q, k)) for queries (Q, d)."""
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
                                 if q.ndim == 1 else np.ascontiguousarray(q, dtype=np.float32), k)
