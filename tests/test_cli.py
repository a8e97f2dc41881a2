import json

import ams
from ams.cli import main
from ams.store import MIGRATIONS
from tests.conftest import FACTS


def write_session(path, facts):
    with open(path, "w") as f:
        for i, t in enumerate(facts):
            f.write(json.dumps({"type": "fact", "id": f"f{i}", "text": t, "session": "s1"}) + "\n")
        f.write(json.dumps({"type": "query", "text": "dog?", "keywords": ["waffles"]}) + "\n")


def test_import_inspect_export_round_trip(tmp_path, tiny_backbone_dir, capsys):
    src, store, out = tmp_path / "in.jsonl", tmp_path / "s.db", tmp_path / "out.jsonl"
    write_session(src, FACTS)
    assert main(["import", str(store), str(src), "--backbone", tiny_backbone_dir, "--user", "ana"]) == 0
    assert "imported 6 memories" in capsys.readouterr().out
    assert main(["inspect", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["memories"] == 6 and info["users"] == {"ana": 6} and info["backbone"] == tiny_backbone_dir
    assert info["bytes_per_memory"] > 0 and info["schema_version"] == len(MIGRATIONS)
    assert main(["export", str(store), "--user", "ana", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == FACTS and all(r["type"] == "fact" and r["session"] == "s1" for r in rows)
    # the export imports again, into another user, through the same command
    assert main(["import", str(store), str(out), "--user", "ben"]) == 0
    with ams.Memory.open(store, backbone=tiny_backbone_dir, user_id="ben") as mem:
        assert [m.text for m in mem.get_all()] == FACTS


def test_inspect_lists_memories_in_text_form(tmp_path, tiny_backbone_dir, capsys):
    store = tmp_path / "s.db"
    with ams.Memory.open(store, backbone=tiny_backbone_dir) as mem:
        mem.write(FACTS[0], session="s9")
    assert main(["inspect", str(store)]) == 0
    out = capsys.readouterr().out
    assert "memories: 1" in out and FACTS[0] in out and "s9" in out


def test_chat_remembers_across_runs(tmp_path, tiny_backbone_dir, capsys, monkeypatch):
    import io

    store = tmp_path / "chat.db"
    with ams.Memory.open(store, backbone=tiny_backbone_dir):
        pass  # a store made for the tiny backbone; chat reads its backbone from it
    monkeypatch.setattr("sys.stdin", io.StringIO("My parrot is called Kiwi.\n/quit\n"))
    assert main(["chat", "--store", str(store), "--max-new-tokens", "3"]) == 0
    assert "ams> " in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("/search parrot\n/quit\n"))
    assert main(["chat", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "1 memories in" in out and "My parrot is called Kiwi." in out  # the second run found it
    with ams.Memory.open(store, backbone=tiny_backbone_dir) as mem:
        assert [m.text for m in mem.get_all()] == ["My parrot is called Kiwi."]


def test_errors_are_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite")
    assert main(["inspect", str(bad)]) == 2
    assert "not an SQLite database" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.db")]) == 2
