import time

import numpy as np
import pytest

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
    idx = BundleIndex(32, exact_below=1000, method="tree", branching=8, leaf_size=32, beam=4)
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


def recall_at(index: BundleIndex, x: np.ndarray, queries: np.ndarray, n: int) -> float:
    """Share of the returned rows that score at least the exact n-th best: ties (duplicate
    memories have identical keys) count, whichever of the tied rows a search returns."""
    best, _ = FlatIndex(x).search(queries, n)
    return float(np.mean([np.sum(x[index.candidates(q, n)] @ q >= best[i, -1] - 1e-5) / n
                          for i, q in enumerate(queries)]))


@pytest.fixture(scope="module")
def sentence_vectors() -> tuple[np.ndarray, np.ndarray]:
    """MiniLM keys of 10,000 generated memories, and of 20 questions and 20 of the memories."""
    from ams.bench.synthetic import generate_session
    from ams.embedder import SentenceEncoder

    s = generate_session(10_000, seed=1, n_queries=20)
    enc = SentenceEncoder.shipped()
    x = enc.encode([f.text for f in s.facts]).numpy()
    return x, enc.encode([q.text for q in s.queries] + [f.text for f in s.facts[::500]]).numpy()


@pytest.mark.parametrize("method, floor", [("scan", 0.99), ("tree", 0.95)])
def test_recall_on_real_sentence_vectors_at_10000_memories(sentence_vectors, method, floor):
    """Templated memories cluster tightly in MiniLM space; random clusters overstate a partition's recall."""
    from ams.config import RetrievalConfig

    x, queries = sentence_vectors
    cfg = RetrievalConfig()
    index = BundleIndex(x.shape[1], exact_below=cfg.exact_below, method=method, rerank=cfg.rerank,
                        branching=cfg.branching, leaf_size=cfg.leaf_size, beam=cfg.beam)
    index.add(x)
    recall = recall_at(index, x, queries, 10)
    assert (index.scan if method == "scan" else index.tree) is not None  # the first stage answered
    assert recall >= floor, recall


def test_coded_scan_finds_the_exact_top_10_and_codes_a_quarter_byte_a_dimension():
    x = clustered(20_000, 64, seed=4)
    queries = normalize_rows(x[:100] + np.random.default_rng(5).normal(scale=0.05, size=(100, 64)))
    index = BundleIndex(64, exact_below=4096, rerank=128)
    index.add(x)
    assert recall_at(index, x, queries, 10) >= 0.99
    assert index.scan.pq.code_size == 64 // 4


def test_coded_scan_follows_adds_deletes_and_replacements_without_retraining():
    x = clustered(6000, 32, seed=6)
    index = BundleIndex(32, exact_below=2000, rerank=64)
    index.add(x[:4000])
    assert index.candidates(x[10], 1)[0] == 10
    scan = index.scan
    index.add(x[4000:5000])  # coded as they come
    assert index.candidates(x[4500], 1)[0] == 4500
    index.remove(10)
    assert 10 not in index.candidates(x[10], 50)
    index.replace(10, x[10])  # a removed row that is replaced stays removed
    assert 10 not in index.candidates(x[10], 50)
    index.replace(20, x[5500])  # row 20 now holds another memory's key
    assert index.candidates(x[5500], 1)[0] == 20
    assert 20 not in index.candidates(x[20], 5) or np.allclose(x[20], x[5500])
    assert index.scan is scan and scan.retired == 2 and len(scan.rows) == 5001
    for r in range(100, 1300):  # retired positions pile up past max(1024, positions / 8): re-coded
        index.remove(r)
    assert 100 not in index.candidates(x[100], 20)
    assert index.scan is scan and scan.retired == 0 and len(scan.rows) == len(index)
    assert index.candidates(x[4999], 1)[0] == 4999 and index.candidates(x[5500], 1)[0] == 20
    index.add(x[5000:6000])
    index.add(clustered(12_000, 32, seed=7))  # live rows past 4x those it trained on: retrained
    index.candidates(x[0], 1)
    assert index.scan is not scan and index.scan.trained_on == len(index)


@pytest.fixture
def held_builds(monkeypatch):
    """Background scan builds wait for `release.set()`: changes can be made while one runs."""
    import threading

    from ams.retrieval import CodedScan

    release, started = threading.Event(), threading.Event()
    build = CodedScan.build

    def held(self, x, alive, **kw):
        started.set()
        release.wait(30)
        return build(self, x, alive, **kw)
    monkeypatch.setattr(CodedScan, "build", held)
    return release, started


def test_a_background_scan_answers_exactly_until_ready_and_takes_in_what_changed_meanwhile(held_builds):
    release, started = held_builds
    x = clustered(7000, 32, seed=12)
    index = BundleIndex(32, exact_below=2000, rerank=64, background=True)
    index.add(x[:5000])
    assert not started.is_set()  # nothing is built before the first search
    first = index.candidates(x[7], 10)  # starts the build, answers exactly
    assert started.wait(5) and index.scan is None
    exact = np.argsort(-(x[:5000] @ x[7]), kind="stable")[:10]
    assert np.array_equal(first, exact)
    index.add(x[5000:6000])  # while the build runs: new rows, a replacement and removals
    index.replace(30, x[6500])
    index.remove(40)
    index.remove(5100)
    assert index.candidates(x[6500], 1)[0] == 30 and 40 not in index.candidates(x[40], 20)
    release.set()
    index.wait()
    scan = index.scan
    assert scan is not None and scan.trained_on == 5000
    live = np.flatnonzero(index.alive)
    assert np.array_equal(np.sort(scan.rows[scan.live]), live)  # every live row coded once, no dead one
    assert (scan.pos_of[[40, 5100]] == -1).all()
    assert index.candidates(x[6500], 1)[0] == 30  # the replaced row is coded with its new key
    assert index.candidates(x[5500], 1)[0] == 5500 and 40 not in index.candidates(x[40], 20)
    index.add(clustered(16_000, 32, seed=13))  # past 4x: the next build runs while the old scan serves
    release.clear()
    index.candidates(x[0], 1)
    assert index.scan is scan and index._build is not None
    assert index.candidates(x[5500], 1)[0] == 5500
    release.set()
    index.wait()
    assert index.scan is not scan and index.scan.trained_on == len(index)


def test_a_failed_background_build_is_raised_to_the_search(monkeypatch):
    from ams.retrieval import CodedScan

    def broken(self, x, alive, **kw):
        raise MemoryError("no room for codes")
    monkeypatch.setattr(CodedScan, "build", broken)
    index = BundleIndex(16, exact_below=0, background=True)
    index.add(clustered(3000, 16, seed=14))
    index.candidates(index.x[0], 1)
    index._build.done.wait(5)
    with pytest.raises(MemoryError, match="no room"):
        index.candidates(index.x[0], 1)
    assert index._build is None


def test_closing_an_index_stops_its_background_build_and_ends_its_thread(monkeypatch):
    from ams import retrieval
    from ams.retrieval import CodedScan

    chunks, add = [], CodedScan.add

    def slow_add(self, rows, x):  # 0.02 s a chunk of 64 rows: the whole build would take 1.2 s
        chunks.append(len(rows))
        time.sleep(0.02)
        add(self, rows, x)
    monkeypatch.setattr(retrieval, "STOP_CHUNK", 64)
    monkeypatch.setattr(CodedScan, "add", slow_add)
    x = clustered(4000, 16, seed=15)
    index = BundleIndex(16, exact_below=0, background=True)
    index.add(x)
    assert index.candidates(x[3], 1)[0] == 3  # exact while the scan is built
    job = index._build
    while not chunks:
        time.sleep(0.005)
    index.close()
    assert not job.thread.is_alive() and job.done.is_set()
    assert isinstance(job.error, retrieval.BuildStopped) and sum(chunks) < len(x)  # stopped part way
    assert index._build is None and index.scan is None
    monkeypatch.setattr(CodedScan, "add", add)
    assert index.candidates(x[9], 1)[0] == 9  # still usable: the next search starts a new build
    index.wait()
    assert index.scan is not None and index.scan.positions == len(x)


def test_coded_scans_of_equal_rows_are_equal():
    x = clustered(3000, 16, seed=8)
    a, b = BundleIndex(16, exact_below=0), BundleIndex(16, exact_below=0)
    a.add(x)
    b.add(x)
    assert all(np.array_equal(a.candidates(q, 20), b.candidates(q, 20)) for q in x[:50])


def test_small_or_mostly_deleted_indexes_are_scanned_exactly():
    x = clustered(1500, 16, seed=9)
    index = BundleIndex(16, exact_below=0)
    index.add(x)
    for r in range(1000):
        index.remove(r)
    assert index.candidates(x[1200], 1)[0] == 1200 and index.scan is None
    with pytest.raises(ValueError, match="method"):
        BundleIndex(16, exact_below=0, method="hnsw")


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


def test_a_handed_over_first_batch_becomes_the_storage_and_later_adds_still_grow_it():
    rng = np.random.default_rng(1)
    first = normalize_rows(rng.standard_normal((2000, 16))).astype(np.float32)
    more = normalize_rows(rng.standard_normal((700, 16))).astype(np.float32)
    kept, copied = (BundleIndex(16, exact_below=1024) for _ in range(2))
    kept.add(first, copy=False)
    copied.add(first.copy())
    assert np.shares_memory(kept.x, first)  # no 2,000-row copy
    for idx in (kept, copied):
        idx.add(more)
        idx.replace(3, more[0])
        idx.remove(11)
    assert not np.shares_memory(kept.x, first)  # grown into a new buffer: the caller's array is let go
    np.testing.assert_array_equal(kept.x, copied.x)
    q = more[5]
    np.testing.assert_array_equal(kept.candidates(q, 20), copied.candidates(q, 20))


def test_fusion_scores_every_pool_row_exactly_in_every_bundle_when_the_pools_differ():
    rng = np.random.default_rng(2)
    keys = {b: normalize_rows(rng.standard_normal((6000, 24))).astype(np.float32) for b in ("a", "b", "c")}
    idx = {b: BundleIndex(24, exact_below=4096, rerank=64) for b in keys}  # coded scans
    for b, x in keys.items():
        idx[b].add(x)
    idx["b"].remove(17)
    q = {b: normalize_rows(rng.standard_normal((1, 24)))[0].astype(np.float32) for b in keys}
    weights = {"a": 1.0, "b": 0.5, "c": 0.0}  # "c" proposes nothing and is still scored
    scores, rows, per = fuse(idx, q, weights, k=200, candidates=40)
    assert len(set(rows.tolist())) == len(rows) == 80 - len(set(idx["a"].candidates(q["a"], 40))
                                                            & set(idx["b"].candidates(q["b"], 40)))
    for b, x in keys.items():
        np.testing.assert_allclose(per[b], x[rows] @ q[b], rtol=0, atol=1e-6, err_msg=b)
    np.testing.assert_allclose(scores, per["a"] + 0.5 * per["b"], rtol=0, atol=1e-6)
