"""Reliability: a writer killed at random moments, and several processes writing one store at once.

Both use real processes on a real SQLite file (a forkserver imports `ams` once, so each process
starts in about a second).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sqlite3
import time

import pytest

import ams
from tests import _workers
from tests.conftest import FACTS


@pytest.fixture(scope="module")
def ctx(tiny_backbone_dir):
    os.environ["AMS_TEST_PRELOAD_BACKBONE"] = tiny_backbone_dir  # read when the forkserver imports _workers
    c = mp.get_context("forkserver")
    c.set_forkserver_preload(["ams.memory", "tests._workers"])
    return c


def _integrity(path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _returned_writes(log) -> dict[str, str]:
    """Ids (with their texts) that a killed writer saw returned: whole lines only."""
    if not os.path.exists(log):
        return {}
    lines = open(log, encoding="utf-8").read().split("\n")[:-1]  # the last piece may be cut mid-line
    return dict(line.split(" ", 1) for line in lines if line != "ready")


def test_sigkill_at_random_moments_loses_no_returned_write(ctx, tmp_path, tiny_backbone_dir):
    """100 times: start a writer, kill it with SIGKILL at a random moment (mid-transaction, mid
    codec training, mid checkpoint), then check every returned write is there, whole, and the file
    is sound. The store grows across trials, so kills also land while codec sets train."""
    path, trials, rng = str(tmp_path / "crash.db"), 100, random.Random(0)
    ams.Memory.open(path, backbone=tiny_backbone_dir).close()
    returned: dict[str, str] = {}
    for trial in range(trials):
        log = str(tmp_path / f"trial{trial}.log")
        p = ctx.Process(target=_workers.killable_writer, args=(path, tiny_backbone_dir, log, trial))
        p.start()
        deadline = time.monotonic() + 120
        while "ready" not in (open(log).read() if os.path.exists(log) else ""):
            assert p.is_alive() and time.monotonic() < deadline, f"trial {trial}: writer did not start"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert p.exitcode == -signal.SIGKILL
        returned.update(_returned_writes(log))
    assert len(returned) > trials  # the writers did write
    assert _integrity(path) == "ok"
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        report = mem.verify()  # every memory whole: all its vectors, decodable, none raw once trained
        stored = {m.id: m.text for m in mem.get_all(limit=-1)}
    assert all(stored.get(m) == t for m, t in returned.items()), "a returned write is missing or changed"
    assert report["memories"] == len(stored) >= len(returned)
    assert report["codec_sets"]["sentence"] is not None  # kills did land on a growing, coded store


def test_four_processes_write_and_search_one_store(ctx, tmp_path, tiny_backbone_dir):
    """4 processes x 1,000 writes with searches between: no error reaches a caller, no write is
    lost, no search returns a partial memory, and each handle sees the others' writes."""
    path, workers, n = str(tmp_path / "shared.db"), 4, 1000
    ams.Memory.open(path, backbone=tiny_backbone_dir).close()
    pipes, procs = [], []
    for w in range(workers):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_workers.writer_searcher, args=(path, tiny_backbone_dir, w, n, send))
        p.start()
        send.close()
        pipes.append(recv)
        procs.append(p)
    results = [r.recv() for r in pipes]
    for p in procs:
        p.join(timeout=60)
    for r in results:
        assert r["errors"] == [], r["errors"][0]
        assert r["torn"] == []
        assert len(r["ids"]) == n
    assert _integrity(path) == "ok"
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        assert len(mem) == workers * n
        assert {m.id for m in mem.get_all(limit=-1)} == {i for r in results for i in r["ids"]}
        mem.verify()


def test_a_handle_sees_another_handles_adds_updates_and_deletes(store_path, tiny_backbone_dir):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as a, \
            ams.Memory.open(store_path, backbone=tiny_backbone_dir) as b:
        ids = a.write_many(["My dog is called Pepper.", "I work at a bakery in Porto.", "My sister is Ana."])
        assert len(b) == 3 and b.search("What is my dog called?", k=1)[0].id == ids[0]
        a.update(ids[0], "My cat is called Miso.")
        assert b.search("What is my cat called?", k=1)[0].id == ids[0]
        a.delete(ids[1])
        assert ids[1] not in [h.id for h in b.search("Where do I work?", k=3)]
        assert len(b) == 2
        c = b.write("I live in Lisbon.")  # b's write lands after a's changes, and a sees it
        assert a.search("Where do I live?", k=1)[0].id == c
        b.verify()
        a.verify()


def test_a_handle_reloads_when_another_process_trains_the_codecs(store_path, tiny_backbone_dir):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as a, \
            ams.Memory.open(store_path, backbone=tiny_backbone_dir) as b:
        a.write_many([f"Memory {i}: I visited place {i} with friend {i % 7}." for i in range(40)])
        assert b.verify()["codec_sets"]["sentence"] == 1  # trained by a, loaded by b
        assert b.search("place 17 with friend 3", k=1)[0].text.startswith("Memory 17:")
        b.write_many([f"Later {i}: a trip to town {i}." for i in range(40)])  # b trains the next sets
        assert a.verify()["codec_sets"] == b.verify()["codec_sets"]


def test_a_store_opens_and_answers_while_another_process_holds_the_write_lock(store_path, tiny_backbone_dir):
    """Opening a store that is already bound and migrated only reads it: it does not wait for a
    writer (a long batch in another process) and answers from what is committed."""
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(FACTS)
    other = sqlite3.connect(store_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:  # the lock is never released: an open that waited for it would raise StoreBusy
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir, busy_timeout=0.2) as mem:
            assert len(mem) == len(FACTS) and mem.search(FACTS[1], k=1)[0].text == FACTS[1]
            with pytest.raises(ams.StoreBusy):  # a write still waits for the lock, then gives up
                mem.write("I also keep bees.")
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_writer_that_cannot_get_the_lock_gets_store_busy_and_writes_nothing(store_path, tiny_backbone_dir):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, busy_timeout=0.2) as mem:
        mem.write("I like tea.")
        other = sqlite3.connect(store_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        t0 = time.monotonic()
        with pytest.raises(ams.StoreBusy):
            mem.write("I like coffee.")
        assert time.monotonic() - t0 < 5  # waited about the timeout, not forever
        assert [h.text for h in mem.search("What do I like?", k=5)] == ["I like tea."]  # reads do not wait
        other.execute("ROLLBACK")
        other.close()
        assert [m.text for m in mem.get_all()] == ["I like tea."]
        mem.write("I like coffee.")  # and once the lock is free, writes go on
        assert len(mem) == 2
    with pytest.raises(ams.InvalidInput):
        ams.Memory.open(store_path, backbone=tiny_backbone_dir, busy_timeout=-1)


def test_threads_sharing_a_memory_and_a_backbone_lose_nothing(store_path, tiny_backbone_dir):
    """Four threads share one Memory and two more share a second one, of another user on the same
    file (both on one backbone): no call fails, every write lands with its last text, and both
    stores verify."""
    import threading

    alice = ams.Memory.open(store_path, backbone=tiny_backbone_dir)
    bob = ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="bob")
    assert alice.backbone is bob.backbone
    errors: list[BaseException] = []
    final: dict[str, dict[str, str]] = {}
    start = threading.Barrier(6)

    def work(mem, name: str, n: int = 12) -> None:
        kept: dict[str, str] = {}
        try:
            start.wait()
            for i in range(n):
                text = f"{name} wrote note {i}: the {['red', 'blue', 'green'][i % 3]} box holds item {i}."
                mid = mem.write(text, session=name)
                kept[mid] = text
                if i % 3 == 0:
                    assert mem.search(f"{name} note {i}", k=3)
                if i % 4 == 1:
                    kept[mid] = text + " Moved to the shelf."
                    mem.update(mid, kept[mid])
                if i % 5 == 2:
                    mem.delete(mid)
                    del kept[mid]
                if i % 6 == 0:
                    mem.generate(f"What does {name}'s box hold?", mode="text", max_new_tokens=2)
        except BaseException as e:  # handed to the main thread
            errors.append(e)
        final[name] = kept

    threads = [threading.Thread(target=work, args=(alice, f"a{t}")) for t in range(4)]
    threads += [threading.Thread(target=work, args=(bob, f"b{t}")) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        for mem, names in ((alice, ["a0", "a1", "a2", "a3"]), (bob, ["b0", "b1"])):
            want = {m: text for name in names for m, text in final[name].items()}
            assert {m.id: m.text for m in mem.get_all(limit=-1)} == want
            assert len(mem) == len(want) and mem.verify()["memories"] == len(want)
    finally:
        alice.close()
        bob.close()
