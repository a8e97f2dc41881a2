"""Per-user snapshots (`ams.snapshot`): a reopen from a snapshot, caught up through the history log,
builds what a reopen from the rows builds; a snapshot that is damaged, too far behind, from before
a re-coding, or of another user is never used; `verify` finds one that disagrees with the rows."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest

import ams
import ams.memory
from ams.bundles import BUNDLES
from ams.snapshot import pack, unpack_snapshot
from ams.store import Store
from tests.conftest import FACTS
from tests.test_memory import NOTES

CHAT = [
    {"role": "user", "name": "Ana", "content": "ugh, my dog Biscuit chewed my shoes again"},
    {"role": "user", "name": "Ben", "content": "haha classic. what did you name the kitten?"},
    {"role": "user", "name": "Ana", "content": "we went with Mochi in the end"},
    {"role": "user", "name": "Ana", "content": "oops, I meant Luna"},
    {"role": "user", "name": "Ben", "content": "I just moved to Graz."},
]


@pytest.fixture
def small(monkeypatch):
    """Snapshots for stores of 10 memories up, instead of 10,000, used while the log holds at most
    as many events since as they hold rows."""
    monkeypatch.setattr(ams.memory, "SNAPSHOT_MIN_ROWS", 10)
    monkeypatch.setattr(ams.memory, "SNAPSHOT_LAG", 1.0)


class Reads:
    """Counts the opens that read every row (`Store.memory_columns`) rather than a snapshot."""

    def __init__(self, monkeypatch) -> None:
        self.n = 0
        columns = Store.memory_columns

        def counted(store, *args, **kwargs):
            self.n += 1
            return columns(store, *args, **kwargs)
        monkeypatch.setattr(Store, "memory_columns", counted)


def _state(mem: ams.Memory) -> dict:
    """What opening built, for the live rows, by memory id (row numbers may differ)."""
    speaker_name = {i: s for s, i in mem._speaker_of.items()}
    session_of = {r: s for s, rows in mem._by_session.items() for r in rows}
    live = np.flatnonzero(mem._index["topic"].alive).tolist()
    rows = {mem._ids[r]: (float(mem._ts[r]), session_of.get(r), speaker_name.get(int(mem._speaker[r])),
                          bool(mem._question[r]), bool(mem._correction[r]),
                          *(mem._index[b].x[r].tobytes() for b in BUNDLES)) for r in live}
    corrected = {mem._ids[r]: [mem._ids[c] for c in cs] for r, cs in mem._corrected_by.items() if r in live}
    return {"rows": rows, "corrected_by": corrected}


def _read_rows(path, backbone, monkeypatch, **kw) -> dict:
    """The state a reopen from the rows builds (the snapshot ignored)."""
    with monkeypatch.context() as m:
        m.setattr(ams.Memory, "_from_snapshot", lambda self: False)
        m.setattr(ams.Memory, "_write_snapshot", lambda self: None)
        with ams.Memory.open(path, backbone=backbone, **kw) as mem:
            return _state(mem)


def _snapshot_row(path, user="default"):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT event_id, rows, checksum, length(data) FROM snapshots WHERE user_id = ?",
                           [user]).fetchone()
    finally:
        con.close()


def test_a_reopen_from_a_snapshot_builds_what_the_rows_build(store_path, tiny_backbone_dir, small, monkeypatch):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(FACTS + NOTES[:10])
        mem.add_messages(CHAT, session="chat-1")
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="bob") as bob:
        bob.write("Bob keeps bees on his roof.")
    assert _snapshot_row(store_path) is None  # written by the first open that reads enough rows
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        ids = [m.id for m in mem.get_all(limit=1000)]
    assert _snapshot_row(store_path)[1] == 21 and _snapshot_row(store_path, "bob") is None

    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:  # changes the snapshot has not seen
        mem.delete(ids[0])
        mem.update(ids[1], "My brother Tomas moved to Porto.")
        mem.update(ids[-1], "actually no, I mixed it up, it's Vienna")  # the last turn becomes a correction
        added = mem.write_many(NOTES[10:13])
        mem.add_messages([{"role": "user", "name": "Ben", "content": "what's your cat called again?"}],
                         session="chat-1")
        mem.delete(added[1])
        live = _state(mem)  # the handle that made the changes: keys from the write path

    reads = Reads(monkeypatch)
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        assert reads.n == 0  # opened from the snapshot, not the rows
        state = _state(mem)
        found = {q: [h.id for h in mem.search(q, k=5, now=2e9)] for q in ("Where does Tomas live?", FACTS[0],
                                                                             "Where did Ben move?", NOTES[11])}
        listed = [m.id for m in mem.get_all(limit=1000)]
        report = mem.verify()
    assert state == _read_rows(store_path, tiny_backbone_dir, monkeypatch) == live
    assert ids[0] not in listed and added[1] not in listed
    assert all(ids[0] not in got and added[1] not in got for got in found.values())
    assert report["snapshot"]["rows"] == 21 and report["snapshot"]["events_since"] == 7
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        assert {q: [h.id for h in mem.search(q, k=5, now=2e9)] for q in found} == found
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="bob") as bob:
        assert [m.text for m in bob.get_all()] == ["Bob keeps bees on his roof."]


def test_a_damaged_snapshot_is_read_around_and_replaced(store_path, tiny_backbone_dir, small, monkeypatch):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:20])
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()  # writes the snapshot
    con = sqlite3.connect(store_path)
    with con:
        data = bytearray(con.execute("SELECT data FROM snapshots").fetchone()[0])
        data[len(data) // 2] ^= 0x40
        con.execute("UPDATE snapshots SET data = ?", [bytes(data)])
    con.close()
    reads = Reads(monkeypatch)
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        assert reads.n == 1  # the damaged snapshot was not used
        assert mem.search(NOTES[5], k=1)[0].text == NOTES[5]
        assert mem.verify()["snapshot"]["rows"] == 20  # replaced by a whole one, from the rows just read
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        assert reads.n == 1 and mem.search(NOTES[5], k=1)[0].text == NOTES[5]


def test_verify_reports_a_damaged_snapshot(store_path, tiny_backbone_dir, small):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:20])
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        con = sqlite3.connect(store_path)
        with con:
            con.execute("UPDATE snapshots SET checksum = checksum + 1")
        con.close()
        with pytest.raises(ams.StoreCorrupted, match="snapshot .* is damaged"):
            mem.verify()


def test_verify_finds_a_snapshot_that_disagrees_with_the_rows(store_path, tiny_backbone_dir, small):
    """A whole snapshot (its checksum holds) that says something the rows do not."""
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:20])
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        event, data, crc = mem.store.snapshot("default")
        snap = unpack_snapshot(data, crc)
        snap.ts = snap.ts.copy()
        snap.ts[3] += 86400.0
        with mem.store.write():
            mem.store.put_snapshot("default", event, pack(snap), len(snap))
        with pytest.raises(ams.StoreCorrupted, match="disagrees"):
            mem.verify()


def test_a_snapshot_too_far_behind_the_log_is_replaced(store_path, tiny_backbone_dir, small, monkeypatch):
    monkeypatch.setattr(ams.memory, "SNAPSHOT_LAG", 0.2)  # 4 events behind a 20-row snapshot at most
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:20])
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
    first = _snapshot_row(store_path)
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[20:24])
    reads = Reads(monkeypatch)
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
    assert reads.n == 0 and _snapshot_row(store_path) == first  # 4 behind: caught up, kept
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[24:30])
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        assert reads.n == 1 and len(mem) == 30  # 10 behind: the rows were read
    assert _snapshot_row(store_path)[:2] == (first[0] + 10, 30)


def test_a_snapshot_from_before_a_recoding_is_not_used(tmp_path, tiny_backbone_dir, small, monkeypatch):
    """A codec set's first PQ version re-codes every stored row: a snapshot made before holds
    codes no row has any more."""
    cfg = ams.MemoryConfig(kakeya=ams.KakeyaConfig(growth=1.5, pq_min_train=1024,
                                                   pq_bytes={"sentence": 16, "salient": 8, "hidden": 8}))
    path = tmp_path / "big.db"
    with ams.Memory.open(path, backbone=tiny_backbone_dir, config=cfg) as mem:
        mem.write_many(NOTES[:300])  # the sentence set's first version: a dense int8 codec
    ams.Memory.open(path, backbone=tiny_backbone_dir).close()
    before = _snapshot_row(path)
    monkeypatch.setattr(ams.memory, "SNAPSHOT_LAG", 10.0)  # lag alone would not refuse it
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[300:520])  # the first PQ version: every earlier row re-coded
    reads = Reads(monkeypatch)
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        assert reads.n == 1
        assert mem.search(NOTES[7], k=1)[0].text == NOTES[7]
        assert mem.verify()["snapshot"] == {"rows": 520, "event": before[0] + 220, "events_since": 0}


def test_opening_does_not_wait_for_a_busy_writer_to_store_a_snapshot(store_path, tiny_backbone_dir, small,
                                                                     monkeypatch):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:20])
    held, release = threading.Event(), threading.Event()

    def writer():  # another connection takes the write lock once the rows are read, and keeps it
        con = sqlite3.connect(store_path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        con.execute("ROLLBACK")
        con.close()
    t = threading.Thread(target=writer)
    build = ams.Memory._open_indexes

    def then_lock(self):
        build(self)
        t.start()
        held.wait(30)
    try:
        with monkeypatch.context() as m:
            m.setattr(ams.Memory, "_open_indexes", then_lock)
            with ams.Memory.open(store_path, backbone=tiny_backbone_dir, busy_timeout=30) as mem:
                assert len(mem) == 20 and mem.search(NOTES[3], k=1)[0].text == NOTES[3]
    finally:
        release.set()
        t.join()
    assert _snapshot_row(store_path) is None  # skipped, not waited for
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
    assert _snapshot_row(store_path)[1] == 20  # the next open stores it


def test_inspect_lists_each_users_snapshot(store_path, tiny_backbone_dir, small, capsys):
    from ams.cli import main

    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="ana") as mem:
        mem.write_many(NOTES[:12])
    ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="ana").close()
    assert main(["inspect", str(store_path), "--json"]) == 0
    [snap] = json.loads(capsys.readouterr().out)["snapshots"]
    assert snap["user"] == "ana" and snap["rows"] == 12 and snap["event"] == 12 and snap["bytes"] > 12 * 100


def test_opening_leaves_numpys_huge_page_advice_as_it_was(store_path, tiny_backbone_dir, small):
    """Indexes are built without it (`_small_pages`); the process's setting comes back after."""
    advice = np._core.multiarray
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:12])
    for setting in (True, False):
        was = advice._set_madvise_hugepage(setting)
        try:
            seen = []
            with ams.memory._small_pages():
                seen.append(advice._get_madvise_hugepage())
                ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()  # nested inside
                seen.append(advice._get_madvise_hugepage())
            assert seen == [False, False]
            ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
            assert advice._get_madvise_hugepage() is setting
        finally:
            advice._set_madvise_hugepage(was)


def test_a_snapshot_whose_event_no_longer_matches_its_blob_is_replaced(store_path, tiny_backbone_dir, small,
                                                                       monkeypatch):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(NOTES[:20])
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
    con = sqlite3.connect(store_path)
    with con:
        con.execute("UPDATE snapshots SET event_id = 10000000")  # a damaged column, far in the future
    con.close()
    reads = Reads(monkeypatch)
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
    assert reads.n == 1 and _snapshot_row(store_path)[:2] == (20, 20)  # read around, and replaced
    ams.Memory.open(store_path, backbone=tiny_backbone_dir).close()
    assert reads.n == 1
