"""Tree-filtered retrieval: one direction tree per bundle, candidates fused across bundles.

A `DirectionTree` is a hierarchical spherical k-means over a bundle's unit `dirn` vectors; a query
descends it by beam search and the rows under the reached leaves are scored exactly. A
`BundleIndex` wraps one bundle's vectors: below `exact_below` rows it scans them all; above, it
builds a tree and scans exactly the rows added since the build (rebuilt once they are a quarter of
it). `fuse` unions every bundle's candidates and ranks them by the weighted sum of all bundles'
exact scores, so a memory found by one bundle is still scored by the others. `FlatIndex` is FAISS
exact inner-product search: the `flat` mode and the reference the trees are tested against.
Glossary: N rows, d width, Q queries, C candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from .kakeya.kmeans import SphericalKMeans


@dataclass
class _Node:
    centroid: np.ndarray  # (d,)
    children: list[_Node] = field(default_factory=list)
    rows: np.ndarray | None = None  # leaf: row indices into the indexed matrix


class DirectionTree:
    """Hierarchical spherical k-means with beam search.

    Args:
        branching: children per inner node.
        leaf_size: a node with at most this many rows is a leaf.
        beam: nodes kept per level while descending.
        seed: clustering seed; equal inputs give equal trees.
    """

    def __init__(self, *, branching: int = 16, leaf_size: int = 64, beam: int = 8, seed: int = 0) -> None:
        self.branching, self.leaf_size, self.beam, self.seed = branching, leaf_size, beam, seed
        self.root: _Node | None = None
        self.x: np.ndarray | None = None

    def build(self, x: np.ndarray) -> DirectionTree:
        """Index unit rows `x` (N, d)."""
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.root = self._build(np.arange(len(self.x)), depth=0)
        return self

    def _build(self, rows: np.ndarray, depth: int) -> _Node:
        xs = self.x[rows]
        centroid = xs.mean(0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        if len(rows) <= self.leaf_size:
            return _Node(centroid, rows=rows)
        km = SphericalKMeans(self.branching, n_iter=10, seed=self.seed + depth).train(xs)
        _, assign = km.assign(xs)
        groups = [rows[assign == c] for c in range(len(km.centroids))]
        groups = [g for g in groups if len(g)]
        if len(groups) == 1:  # identical points: no split possible
            return _Node(centroid, rows=rows)
        return _Node(centroid, children=[self._build(g, depth + 1) for g in groups])

    def search(self, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`n` rows for query `q` (d,) among the reached leaves: (scores D, rows I)."""
        frontier = [self.root]
        leaves: list[np.ndarray] = []
        while frontier:
            inner = [c for node in frontier for c in node.children]
            leaves += [node.rows for node in frontier if node.rows is not None]
            if not inner:
                break
            sims = np.array([c.centroid @ q for c in inner])
            frontier = [inner[i] for i in np.argsort(-sims, kind="stable")[: self.beam]]
        rows = np.concatenate(leaves) if leaves else np.zeros(0, dtype=np.int64)
        scores = self.x[rows] @ q
        top = np.argsort(-scores, kind="stable")[:n]
        return scores[top], rows[top]


class BundleIndex:
    """One bundle's retrieval keys with exact scan while small and a direction tree when large."""

    def __init__(self, d: int, *, exact_below: int, branching: int, leaf_size: int, beam: int) -> None:
        self.d = d
        self.exact_below = exact_below
        self._tree_args = dict(branching=branching, leaf_size=leaf_size, beam=beam)
        self._x = np.zeros((0, d), dtype=np.float32)  # capacity rows; the first `_n` are in use
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0
        self.version = 0  # changes with every add, replace and remove
        self.tree: DirectionTree | None = None
        self._built_rows = 0

    @property
    def x(self) -> np.ndarray:
        """(rows, d) keys, a view: rows are never reordered, deleted rows stay (see `alive`)."""
        return self._x[: self._n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    def __len__(self) -> int:
        return int(self.alive.sum())

    def add(self, x: np.ndarray) -> None:
        """Append rows; storage grows by doubling, so n single adds cost O(n) copies, not O(n^2)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.d)
        need = self._n + len(x)
        if need > len(self._x):
            cap = max(need, 2 * len(self._x), 64)
            grown, alive = np.zeros((cap, self.d), dtype=np.float32), np.zeros(cap, dtype=bool)
            grown[: self._n], alive[: self._n] = self.x, self.alive
            self._x, self._alive = grown, alive
        self._x[self._n : need] = x
        self._alive[self._n : need] = True
        self._n = need
        self.version += 1

    def replace(self, row: int, x: np.ndarray) -> None:
        """Replace a row's vector (an updated memory); the tree is rebuilt on next search."""
        self.x[row] = x
        self.tree = None
        self.version += 1

    def remove(self, row: int) -> None:
        self.alive[row] = False
        self.version += 1

    def scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.x[rows] @ q

    def candidates(self, q: np.ndarray, n: int) -> np.ndarray:
        """Up to `n` live rows with the highest inner product with `q` (tree-filtered when large)."""
        total = len(self.x)
        if total < self.exact_below:
            rows = np.flatnonzero(self.alive)
            s = self.x[rows] @ q
            return rows[np.argsort(-s, kind="stable")[:n]]
        if self.tree is None or total - self._built_rows > self._built_rows // 4:
            self.tree = DirectionTree(**self._tree_args).build(self.x)
            self._built_rows = total
        _, rows = self.tree.search(q, n + int((~self.alive[: self._built_rows]).sum()))
        tail = np.arange(self._built_rows, total)  # rows added since the build: exact scan
        rows = np.concatenate([rows, tail])
        rows = rows[self.alive[rows]]
        s = self.x[rows] @ q
        return rows[np.argsort(-s, kind="stable")[:n]]


def fuse(indexes: dict[str, BundleIndex], queries: dict[str, np.ndarray], weights: dict[str, float],
         *, k: int, candidates: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Fused top-k rows over several bundles.

    Every bundle with a positive weight proposes `candidates` rows; the union is scored by
    sum_b weights[b] * <queries[b], dirn_b> using every bundle's exact score.

    Returns:
        (fused scores (k,), rows (k,), per-bundle scores {bundle: (k,)}), best first.
    """
    active = [b for b, w in weights.items() if w > 0]
    pool = np.unique(np.concatenate([indexes[b].candidates(queries[b], candidates) for b in active]))
    per = {b: indexes[b].scores(queries[b], pool) for b in indexes}
    total = sum(weights[b] * per[b] for b in active)
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
