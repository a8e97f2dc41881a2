"""The session-viability benchmark: scoring rule, synthetic generator, report schema, CLI."""

import json
import re
import time

import pytest

import ams
from ams.bench.synthetic import FAMILY, FIRST, LAST, RELATIONS, _split, generate_session
from ams.bench.viability import MODES, BenchConfig, format_table, run, session_for
from ams.cli import main
from ams.session import is_hit, is_substring_hit


class TestHitRule:
    def test_whole_word_case_and_accents(self):
        assert is_hit("I love CHOPIN's nocturnes", ["chopin"])
        assert is_hit("Chopín, of course.", ["chopin"])
        assert is_hit("Chopin", ["Chopín"])
        assert is_hit("It is in Tallinn.", ["tallinn"])

    def test_word_boundaries(self):
        assert not is_hit("The maximum is three.", ["max"])
        assert is_hit("His name is Max.", ["max"])
        assert not is_hit("unthaied", ["thai"])
        assert is_hit("Thai-food is out", ["thai"])
        assert is_substring_hit("The maximum is three.", ["max"])  # the original rule counted this

    def test_forbidden_words_void_a_hit(self):
        assert is_hit("You live in Porto now.", ["porto"], ["lyon"])
        assert not is_hit("You lived in Lyon, now Porto.", ["porto"], ["lyon"])
        assert not is_hit("Lyon!", ["porto"], ["lyon"])

    def test_multiword_keywords(self):
        assert is_hit("My favourite is Wolf Hall.", ["Wolf Hall"])
        assert not is_hit("A wolf in the hall.", ["Wolf Hall"])


class TestSyntheticSessions:
    def test_same_seed_same_session_other_seed_other_session(self):
        assert generate_session(200, seed=3) == generate_session(200, seed=3)
        assert generate_session(200, seed=3) != generate_session(200, seed=4)

    @pytest.mark.parametrize("n", [10, 20, 100, 1000, 10_000])
    def test_sizes_and_questions(self, n):
        s = generate_session(n, seed=0)
        assert len(s.facts) == n and len({f.text for f in s.facts}) == n
        assert 1 <= len(s.queries) <= 20
        by_id = {f.id: f for f in s.facts}
        for q in s.queries:  # the gold fact states the answer
            assert any(is_hit(by_id[f].text, q.keywords) for f in q.fact_ids), q

    def test_updates_name_the_new_value_and_forbid_the_old(self):
        s = generate_session(100, seed=1)
        updates = [q for q in s.queries if q.forbidden]
        assert len(updates) >= 3
        pos = {f.id: i for i, f in enumerate(s.facts)}
        for q in updates:
            old = [f for f in s.facts if is_hit(f.text, q.forbidden)]
            new = s.facts[pos[q.fact_ids[0]]]
            assert old and all(pos[o.id] < pos[new.id] and o.ts <= new.ts for o in old)

    def test_same_relation_about_different_people(self):
        s = generate_session(300, seed=0)
        dog_facts = [f.text for f in s.facts if re.search(r"\bdog\b|puppy", f.text)]
        owners = {t.split(" dog")[0].split(" has")[0] for t in dog_facts}
        assert len(owners) >= 3

    def test_timestamps_span_months_in_write_order(self):
        s = generate_session(1000, seed=0)
        ts = [f.ts for f in s.facts]
        assert ts == sorted(ts) and (ts[-1] - ts[0]) > 150 * 86400

    def test_held_out_split_shares_no_template_value_or_name_with_train(self):
        for r in RELATIONS:
            for pool in (r.facts, r.questions, r.values):
                assert not set(_split(pool, "train")) & set(_split(pool, "heldout"))
                assert set(_split(pool, "train")) | set(_split(pool, "heldout")) == set(pool)
        for pool in (FAMILY, FIRST, LAST):
            assert not set(_split(pool, "train")) & set(_split(pool, "heldout"))
        train = " ".join(f.text for f in generate_session(2000, seed=0, split="train").facts)
        for name in _split(FIRST, "heldout"):
            assert not re.search(rf"\b{name}\b", train), name

    def test_bad_sizes(self):
        with pytest.raises(ValueError):
            generate_session(5)
        with pytest.raises(ValueError):
            generate_session(20, split="test")


def test_seed_session_sizes():
    assert len(session_for(BenchConfig(session="seed"), 10).facts) == 10
    assert len(session_for(BenchConfig(session="seed"), 20).facts) == 20
    with pytest.raises(ams.InvalidInput):
        session_for(BenchConfig(session="seed"), 50)
    with pytest.raises(ams.InvalidInput):
        BenchConfig(modes=("text", "telepathy"))


def test_report_schema_through_the_cli(tmp_path, tiny_backbone_dir, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["bench", "session-viability", "--session", "synthetic", "--n", "10,20", "--backbone",
                 tiny_backbone_dir, "--max-new-tokens", "2", "--queries", "3", "--json", str(out),
                 "--plot", str(png), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "oracle" in table and "hybrid" in table
    report = json.loads(out.read_text())
    assert report["report_version"] == 2 and report["benchmark"] == "session-viability"
    assert report["config"]["ns"] == [10, 20] and report["config"]["modes"] == list(MODES)
    assert report["channel_weights"] is None  # no weights given: the untrained channel
    rows = report["results"]
    assert {(r["n"], r["mode"]) for r in rows} == {(n, m) for n in (10, 20) for m in MODES}
    for r in rows:
        assert 0 <= r["hit_rate"] <= 1 and 0 <= r["substring_hit_rate"] <= 1
        assert (r["recall_at_1"] is None) == (r["mode"] not in ("prefix", "flat", "text", "hybrid"))
        assert r["bytes_per_memory"] > 0 and r["write_ms_per_memory"] > 0 and r["peak_rss_mb"] > 0
        assert r["mean_prompt_tokens"] > 0 and r["generate_ms_p95"] >= r["generate_ms_p50"]
        assert len(r["answers"]) == r["queries"] == 3
        for a in r["answers"]:
            assert set(a) >= {"query", "answer", "hit", "substring_hit", "keywords", "forbidden", "gold", "used"}
            assert a["hit"] == is_hit(a["answer"], a["keywords"], a["forbidden"])
        if r["mode"] == "oracle":
            assert all(a["used"] == a["gold"] for a in r["answers"])
    assert png.stat().st_size > 10_000


def test_a_rerun_reproduces_every_answer(tiny_backbone_dir):
    """Questions are asked at a fixed time, so neither retrieval nor answers follow the clock."""
    cfg = BenchConfig(session="seed", ns=(20,), modes=("text", "hybrid", "oracle"), backbone=tiny_backbone_dir,
                      max_new_tokens=3, batch_size=4)
    first = run(cfg, progress=False)
    time.sleep(1.5)  # the temporal bundle's fastest atom turns 9 degrees in 1.5 s
    second = run(cfg, progress=False)
    assert [[(a["answer"], a["used"]) for a in r["answers"]] for r in first["results"]] == \
        [[(a["answer"], a["used"]) for a in r["answers"]] for r in second["results"]]


def test_retrieval_only_sweep_reports_both_methods(tiny_backbone_dir):
    report = run(BenchConfig(session="synthetic", ns=(40,), backbone=tiny_backbone_dir, retrieval_only=True,
                             queries=5), progress=False)
    assert [r["mode"] for r in report["results"]] == ["retrieval:ams", "retrieval:flat"]
    assert all(0 <= r["recall_at_1"] <= r["recall_at_k"] <= 1 for r in report["results"])
    assert "retrieval:ams" in format_table(report)


def test_weights_flag_reaches_the_stores(capsys, tmp_path, tiny_backbone_dir):
    args = ["bench", "session-viability", "--backbone", tiny_backbone_dir, "--n", "10", "--modes", "prefix",
            "--queries", "2", "--quiet", "--weights", str(tmp_path / "missing.safetensors")]
    assert main(args) == 2
    assert "cannot read channel weights" in capsys.readouterr().err


def test_a_session_file_is_cut_to_its_first_n_facts(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = [{"type": "fact", "id": f"a{i}", "text": f"Fact {i}."} for i in range(6)]
    lines += [{"type": "query", "text": "q1?", "keywords": ["x"], "fact_ids": ["a1"]},
              {"type": "query", "text": "q5?", "keywords": ["y"], "fact_ids": ["a5"]},
              {"type": "query", "text": "any?", "keywords": ["z"]}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    s = session_for(BenchConfig(session=str(path)), 3)
    assert [f.id for f in s.facts] == ["a0", "a1", "a2"]
    assert [q.text for q in s.queries] == ["q1?", "any?"]  # q5 asks about a fact that was cut
    with pytest.raises(ams.InvalidInput, match="too many"):
        session_for(BenchConfig(session=str(path)), 7)
    path.write_text('{"type": "fact", "text": "ok"}\nnot json\n')
    with pytest.raises(ams.InvalidInput, match="not JSON"):
        session_for(BenchConfig(session=str(path)), 1)
