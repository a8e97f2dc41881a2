import numpy as np

from ams.kakeya import normalize_rows
from ams.retrieval import BundleIndex, DirectionTree, FlatIndex, fuse


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors in 200 topics, like sentence embeddings of many memories."""
    rng = np.random.default_rng(seed)
    topics = normalize_rows(rng.normal(size=(200, d)))
    return normalize_rows(topics[rng.integers(200, size=n)] + rng.normal(scale=0.08, size=(n, d)))


def test_tree_recall_against_faiss_exact_at_10000_memories():
    x = clustered(10_000, 64, seed=0)
    queries = normalize_rows(x[:200] + np.random.default_rng(1).normal(scale=0.05, size=(200, 64)))
    tree = DirectionTree(branching=16, leaf_size=64, beam=8).build(x)
    _, exact = FlatIndex(x).search(queries, 10)
    recall = np.mean([len(set(tree.search(q, 10)[1]) & set(exact[i])) / 10 for i, q in enumerate(queries)])
    assert recall >= 0.95, recall


def test_tree_search_scans_only_part_of_the_store():
    x = clustered(5000, 32, seed=2)
    tree = DirectionTree(branching=16, leaf_size=32, beam=2).build(x)
    reached = tree.reach(x[0])  # the rows a beam of 2 scans for one query
    assert len(np.unique(reached)) == len(reached)
    assert 0 in reached
    assert len(reached) < len(x) / 4


def test_bundle_index_skips_deleted_rows_and_sees_rows_added_after_the_build():
    x = clustered(3000, 32, seed=3)
    idx = BundleIndex(32, exact_below=1000, branching=8, leaf_size=32, beam=4)
    idx.add(x[:2500])
    first = idx.candidates(x[10], 5)
    assert first[0] == 10
    idx.remove(10)
    assert 10 not in idx.candidates(x[10], 50)
    idx.add(x[2500:2600])  # fewer than a quarter of the built rows: scanned exactly, no rebuild
    tree = idx.tree
    assert idx.candidates(x[2550], 1)[0] == 2550 and idx.tree is tree
    assert len(idx) == 2599


def test_fuse_ranks_by_the_weighted_sum_of_every_bundle():
    a = normalize_rows(np.array([[1.0, 0], [0.8, 0.6], [0, 1]]))
    b = normalize_rows(np.array([[0, 1.0], [1.0, 0], [0, 1]]))
    idx = {"a": BundleIndex(2, exact_below=100, branching=2, leaf_size=2, beam=1),
           "b": BundleIndex(2, exact_below=100, branching=2, leaf_size=2, beam=1)}
    idx["a"].add(a)
    idx["b"].add(b)
    q = {"a": np.array([1.0, 0]), "b": np.array([1.0, 0])}
    scores, rows, per = fuse(idx, q, {"a": 1.0, "b": 0.0}, k=3, candidates=3)
    assert rows.tolist() == [0, 1, 2]
    scores, rows, per = fuse(idx, q, {"a": 1.0, "b": 1.0}, k=3, candidates=3)
    assert rows[0] == 1  # 0.8 + 1.0 beats 1.0 + 0.0
    np.testing.assert_allclose(scores, per["a"] + per["b"])


def test_tree_recall_on_real_sentence_vectors_at_10000_memories():
    """Templated memories cluster tightly in MiniLM space; random clusters overstate tree recall."""
    from ams.bench.synthetic import generate_session
    from ams.config import RetrievalConfig
    from ams.embedder import SentenceEncoder

    s = generate_session(10_000, seed=1, n_queries=20)
    enc = SentenceEncoder.shipped()
    x = enc.encode([f.text for f in s.facts]).numpy()
    queries = enc.encode([q.text for q in s.queries] + [f.text for f in s.facts[::500]]).numpy()
    cfg = RetrievalConfig()
    tree = BundleIndex(x.shape[1], exact_below=cfg.exact_below, branching=cfg.branching,
                       leaf_size=cfg.leaf_size, beam=cfg.beam)
    tree.add(x)
    _, exact = FlatIndex(x).search(queries, 10)
    recall = np.mean([len(set(tree.candidates(q, 10)) & set(exact[i])) / 10 for i, q in enumerate(queries)])
    assert tree.tree is not None  # the tree, not the exact scan, answered
    assert recall >= 0.95, recall


def test_bundle_index_grows_by_doubling_and_keeps_every_row():
    from ams.retrieval import BundleIndex

    rng = np.random.default_rng(0)
    idx = BundleIndex(8, exact_below=4096, branching=4, leaf_size=8, beam=4)
    rows = rng.standard_normal((300, 8)).astype(np.float32)
    versions = []
    for r in rows:  # one by one, as single writes do
        idx.add(r[None])
        versions.append(idx.version)
    assert np.array_equal(idx.x, rows) and idx.alive.all() and len(idx) == 300
    assert len(idx._x) < 2 * 300 + 64 and versions == sorted(set(versions))
    idx.remove(5)
    idx.replace(7, np.ones(8, dtype=np.float32))
    assert len(idx) == 299 and not idx.alive[5] and np.all(idx.x[7] == 1) and idx.version == versions[-1] + 2
    assert 5 not in idx.candidates(rows[5], 10)
