"""Schema migrations: a store written by the previous schema (a kept fixture file) opens, migrates
inside one transaction and keeps every memory; a failed migration leaves the file as it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import ams
from ams import store as store_mod
from ams.config import MemoryConfig

FIXTURE = Path(__file__).parent / "fixtures" / "store_schema1.db"  # schema 001, tiny backbone, 2 users


def _dump(path) -> list:
    con = sqlite3.connect(path)
    try:
        return [con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("memories", "vectors", "codecs", "meta", "history", "migrations")]
    finally:
        con.close()


def test_fixture_is_schema_one():
    con = sqlite3.connect(FIXTURE)
    assert [r[0] for r in con.execute("SELECT name FROM migrations")] == ["001_initial"]
    con.close()


def test_previous_schema_store_migrates_and_keeps_every_memory(tmp_path, tiny_backbone_dir):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    before = _dump(path)[0]  # memory rows as schema 001 wrote them
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        assert mem.store.schema_version == len(store_mod.MIGRATIONS)
        report = mem.verify()  # checksums were computed for every old row and vector
        got = [(m.id, m.text, m.session, m.meta) for m in mem.get_all(limit=-1)]
        assert report["memories"] == len(got) == 69
        assert "I moved to Lisbon." in [t for _, t, _, _ in got]
        lexical = {mem.get(m).text for m, _ in mem.store.lexical(mem.user_id, ["lisbon"], 5)}  # 004: FTS5 built
        assert "I moved to Lisbon." in lexical
        assert mem.search("place 12 with friend 5", k=1)[0].text.startswith("Memory 12:")
        assert {kind for *_, kind, _ in mem.store.codecs()} == {"kakeya"}  # 005: old versions are Kakeya's,
        assert json.loads(mem.store.get_meta("config"))["kakeya"]["codec"] == "pq"  # later ones plain PQ
        for field in ("content", "context", "salient", "hidden"):  # 003: codes are their bare bytes now
            set_name = mem.registry.set_of(field)
            for _, version, code in mem.store.vectors(None, field):
                assert version == 0 or code.shape == (mem.registry.codec(set_name, version).code_size,)
        new = mem.write("A memory written after the migration.")
        assert mem.get(new).text == "A memory written after the migration."
    with ams.Memory.open(path, backbone=tiny_backbone_dir, user_id="bob") as bob:
        assert [m.text for m in bob.get_all()] == ["Bob's memory: my cat is Miso."]
    old_ids = {r[1] for r in before}
    assert old_ids <= {r[1] for r in _dump(path)[0]}


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch, tiny_backbone_dir):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    before = _dump(path)

    def broken(db):
        store_mod._m002_checksums(db)  # gets halfway: columns added and filled ...
        raise RuntimeError("power cut in the middle of a migration")  # ... then fails

    monkeypatch.setattr(store_mod, "MIGRATIONS", [store_mod.MIGRATIONS[0], ("002_checksums", broken)])
    with pytest.raises(RuntimeError, match="power cut"):
        ams.Memory.open(path, backbone=tiny_backbone_dir)
    assert _dump(path) == before
    monkeypatch.undo()
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:  # and a later open migrates it
        assert mem.verify()["memories"] == 69


def test_a_store_from_a_newer_library_is_refused(tmp_path, tiny_backbone_dir):
    path = tmp_path / "new.db"
    shutil.copy(FIXTURE, path)
    con = sqlite3.connect(path)
    con.execute("INSERT INTO migrations VALUES ('999_future', 0)")
    con.commit()
    con.close()
    with pytest.raises(ams.SchemaTooNew):
        ams.Memory.open(path, backbone=tiny_backbone_dir)


def _stored_config(path, edit, *, base: str | None = None) -> str:
    """Rewrite the config a store saved (starting from `base` where given); returns the text it had."""
    con = sqlite3.connect(path)
    (text,) = con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    cfg = json.loads(base or text)
    edit(cfg)
    con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(cfg),))
    con.commit()
    con.close()
    return text


def _stored_answer_time(path, names) -> None:
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'answer_time_settings'", (json.dumps(names),))
    con.commit()
    con.close()


def test_a_newer_librarys_answer_time_settings_are_left_out_where_it_recorded_them_so(tmp_path, tiny_backbone_dir):
    """A store records which of its settings are read only when answering, so a version that lacks
    a newer one still opens it; an unknown setting the writer did not list may change the stored
    bytes, and is refused."""
    path = tmp_path / "newer.db"
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        mid = mem.write("I adopted a beagle named Waffles.")
        assert json.loads(mem.store.get_meta("answer_time_settings")) == mem.config.answer_time_settings()
    listed = MemoryConfig().answer_time_settings()
    assert "prefix.salient_order" in listed and "retrieval" in listed
    assert not {"embedder", "context_turns", "prefix.slots", "kakeya", "temporal"} & set(listed)
    _stored_config(path, lambda c: (c["prefix"].update(answer_style="brief"), c.update(reply_language="pt")))
    before = path.read_bytes()
    with pytest.raises(ams.SchemaTooNew, match="prefix.answer_style, reply_language"):  # not listed by the writer
        ams.Memory.open(path, backbone=tiny_backbone_dir)
    assert path.read_bytes() == before
    _stored_answer_time(path, [*listed, "prefix.answer_style", "reply_language"])  # as the newer writer listed them
    with pytest.warns(UserWarning, match="without its settings prefix.answer_style, reply_language"):
        with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
            assert mem.search("beagle", k=1)[0].id == mid
    for junk in ('{"prefix": 1}', "[1, 2]", "not json"):
        con = sqlite3.connect(path)
        con.execute("UPDATE meta SET value = ? WHERE key = 'answer_time_settings'", (junk,))
        con.commit()
        con.close()
        with pytest.raises(ams.StoreCorrupted, match="config is unreadable"):
            ams.Memory.open(path, backbone=tiny_backbone_dir)


def test_a_newer_librarys_retrieval_settings_are_left_out_and_its_storage_settings_refused(
        tmp_path, tiny_backbone_dir):
    """A store made by a newer version opens when what it adds only ranks searches, and is refused,
    untouched, when it may change what the stored bytes mean."""
    path = tmp_path / "newer.db"
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        mid = mem.write("I adopted a beagle named Waffles.")
    own = _stored_config(path, lambda c: c["retrieval"].update(future_rerank=True, rerank_depth=7))
    with pytest.warns(UserWarning, match="retrieval.future_rerank, retrieval.rerank_depth") as caught:
        with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
            assert mem.search("beagle", k=1)[0].id == mid
    assert caught[0].filename == __file__  # pointed at the caller's open()
    for edit, name in ((lambda c: c["kakeya"].update(lattice="e8"), "kakeya.lattice"),
                       (lambda c: c.update(encoder_layers=2), "encoder_layers")):
        _stored_config(path, edit, base=own)
        before = path.read_bytes()
        with pytest.raises(ams.SchemaTooNew, match=f"{name}.*upgrade ams"):
            ams.Memory.open(path, backbone=tiny_backbone_dir)
        assert path.read_bytes() == before
    _stored_config(path, lambda c: c["retrieval"].update(relative_gate=-3), base=own)  # known, out of range
    with pytest.raises(ams.StoreCorrupted, match="config is unreadable"):
        ams.Memory.open(path, backbone=tiny_backbone_dir)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM meta WHERE key = 'config'")
    con.commit()
    con.close()
    with pytest.raises(ams.StoreCorrupted, match="holds no config"):
        ams.Memory.open(path, backbone=tiny_backbone_dir)
