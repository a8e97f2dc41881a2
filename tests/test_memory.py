"""The public API on a tiny random backbone: writes, reads, updates, deletes, isolation, reopen."""

import datetime as dt
import json
import sqlite3
import time

import numpy as np
import pytest
import torch

import ams
from tests.conftest import FACTS

NOTES = [f"Note {i}: person {i % 37} keeps a {['red', 'blue', 'green'][i % 3]} item number {i % 53}."
         for i in range(900)]  # enough memories for a set to train its compact codecs


def test_write_get_and_get_all_in_write_order(fresh_store):
    ids = [fresh_store.write(t, session="s1") for t in FACTS[:3]]
    assert [m.id for m in fresh_store.get_all()] == ids
    rec = fresh_store.get(ids[1])
    assert rec.text == FACTS[1] and rec.session == "s1" and rec.role == "user"
    assert [m.id for m in fresh_store.get_all(limit=1, offset=1)] == [ids[1]]


def test_ts_accepts_unix_seconds_and_datetimes(fresh_store):
    a = fresh_store.write("I moved to Oslo.", ts=1_767_225_600)
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    b = fresh_store.write("I started a new job.", ts=when)
    assert fresh_store.get(a).ts == 1_767_225_600 and fresh_store.get(b).ts == when.timestamp()


def test_search_returns_the_written_memory_with_per_bundle_scores(fresh_store):
    ids = fresh_store.write_many(FACTS)
    hits = fresh_store.search(FACTS[2], k=3)
    assert hits[0].id == ids[2] and hits[0].text == FACTS[2]
    assert set(hits[0].scores) == {"temporal", "topic", "context", "lexical", "recency", "holder", "question"}
    assert hits[0].scores["topic"] == pytest.approx(1.0, abs=1e-3)
    assert hits[0].scores["lexical"] == pytest.approx(1.0)  # the query is the text: the best BM25 match
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_write_many_is_one_transaction(fresh_store):
    fresh_store.write_many(FACTS[:2])
    with pytest.raises(ams.EmptyText):
        fresh_store.write_many([FACTS[2], "   ", FACTS[3]])
    assert len(fresh_store.get_all()) == 2 and len(fresh_store) == 2


def test_update_re_encodes_and_keeps_history(fresh_store):
    mid = fresh_store.write("My dog is called Rex.")
    fresh_store.write_many(FACTS)
    fresh_store.update(mid, "My cat is called Miso and loves tuna.")
    assert fresh_store.get(mid).text.startswith("My cat")
    assert fresh_store.search("My cat is called Miso and loves tuna.", k=1)[0].id == mid
    assert [e["event"] for e in fresh_store.history(mid)] == ["ADD", "UPDATE"]


def test_deleted_memories_never_come_back(fresh_store):
    ids = fresh_store.write_many(FACTS)
    fresh_store.delete(ids[0])
    assert all(h.id != ids[0] for h in fresh_store.search(FACTS[0], k=len(FACTS)))
    assert ids[0] not in [m.id for m in fresh_store.get_all()]
    with pytest.raises(ams.MemoryNotFound):
        fresh_store.get(ids[0])
    g = fresh_store.generate(FACTS[0], mode="text", k=5, max_new_tokens=2)
    assert ids[0] not in g.memory_ids
    assert [e["event"] for e in fresh_store.history(ids[0])] == ["ADD", "DELETE"]


def test_users_are_isolated(store_path, tiny_backbone_dir):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="alice") as alice, \
            ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="bob") as bob:
        a_ids = alice.write_many(FACTS[:3])
        b_ids = bob.write_many(FACTS[3:])
        assert {h.id for h in bob.search(FACTS[0], k=10)} <= set(b_ids)
        with pytest.raises(ams.MemoryNotFound):
            bob.delete(a_ids[0])
        with pytest.raises(ams.MemoryNotFound):
            bob.update(a_ids[0], "hijacked")
        with pytest.raises(ams.MemoryNotFound):
            bob.get(a_ids[0])
        for m in b_ids:
            bob.delete(m)
        assert [m.id for m in alice.get_all()] == a_ids
        assert alice.get(a_ids[0]).text == FACTS[0]


def test_reopen_restores_search_and_generation(store_path, tiny_backbone_dir):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many([{"text": t, "session": "s1" if i % 2 else "s2"} for i, t in enumerate(FACTS)])
        before = [(h.id, round(h.scores["topic"], 5)) for h in mem.search("Who lives in Lisbon?", k=4)]
        text_before = mem.generate("Who lives in Lisbon?", mode="hybrid", max_new_tokens=8).text
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        after = [(h.id, round(h.scores["topic"], 5)) for h in mem.search("Who lives in Lisbon?", k=4)]
        assert after == before
        assert mem.generate("Who lives in Lisbon?", mode="hybrid", max_new_tokens=8).text == text_before


def test_reopen_decodes_rows_of_several_codec_versions_to_the_same_keys(store_path, tiny_backbone_dir):
    cfg = ams.MemoryConfig(kakeya=ams.KakeyaConfig(growth=1.5))
    texts = [f"Note {i}: person {i % 37} keeps a {['red', 'blue', 'green'][i % 3]} item number {i % 53}."
             for i in range(160)]
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, config=cfg) as mem:
        for i in range(0, 160, 40):
            mem.write_many(texts[i : i + 40])
        assert len({v for _, v, _ in mem.store.vectors(None, "content")}) >= 2  # rows of two versions
        keys = {b: mem._index[b].x.copy() for b in ("topic", "context", "temporal")}
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        for b, x in keys.items():
            np.testing.assert_array_equal(mem._index[b].x, x, err_msg=b)


@pytest.mark.parametrize("damage", ["flip a code byte", "drop a vector row"])
def test_a_damaged_vector_is_refused_at_open(store_path, tiny_backbone_dir, damage):
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(FACTS)
        victim = mem.get_all(limit=1)[0].id
    con = sqlite3.connect(store_path)
    if damage == "flip a code byte":  # the checksum column is left as it was: the bytes no longer match it
        data = bytearray(con.execute("SELECT data FROM vectors WHERE memory_id = ? AND field = 'context'",
                                     [victim]).fetchone()[0])
        data[len(data) // 2] ^= 0x10
        con.execute("UPDATE vectors SET data = ? WHERE memory_id = ? AND field = 'context'", [bytes(data), victim])
        match = "checksum"
    else:
        con.execute("DELETE FROM vectors WHERE memory_id = ? AND field = 'content'", [victim])
        match = "missing its 'content' vector"
    con.commit()
    con.close()
    with pytest.raises(ams.StoreCorrupted, match=match):
        ams.Memory.open(store_path, backbone=tiny_backbone_dir)


def test_every_mode_generates_and_reports_its_inputs(fresh_store):
    fresh_store.write_many(FACTS)
    for mode in ams.MODES:
        g = fresh_store.generate("What is my dog's name?", mode=mode, k=2, max_new_tokens=3)
        assert g.mode == mode and isinstance(g.text, str) and g.in_tokens > 0
        assert (g.prefix_slots > 0) == (mode in ("prefix", "hybrid"))
        assert (len(g.memory_ids) > 0) == (mode in ("prefix", "flat", "text", "hybrid"))
        assert len(g.memory_ids) <= 2


def test_generate_many_answers_as_generate_does_one_by_one(fresh_store):
    questions = ["What is my dog's name?", "Where does my sister live?", "Who lives in Lisbon?",
                 "What do I do for a living, and where did I grow up before moving?"]  # unequal lengths: padding
    fresh_store.write_many(FACTS)
    batched = fresh_store.generate_many(questions, mode="text", k=2, max_new_tokens=6, batch_size=3)
    assert [g.batch for g in batched] == [3, 3, 3, 1]
    single = [fresh_store.generate(q, mode="text", k=2, max_new_tokens=6) for q in questions]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.memory_ids for g in batched] == [g.memory_ids for g in single]
    # with prefixes (whose temporal fibers see access counts): the same plans, batched or not
    plans = [fresh_store._plan(q, "hybrid", 2, 6, None, None, 1.7e9) for q in questions]
    assert all(p.prefix is not None for p in plans)
    one_by_one = [fresh_store.backbone.generate(p.ids, prefix=p.prefix, max_new_tokens=6) for p in plans]
    together = fresh_store.backbone.generate_batch([p.ids for p in plans], prefixes=[p.prefix for p in plans],
                                                   max_new_tokens=6)
    assert together == one_by_one


def test_generate_many_checks_everything_first(fresh_store):
    ids = fresh_store.write_many(FACTS[:3])
    before = [m.access_count for m in fresh_store.get_all()]
    with pytest.raises(ams.EmptyText):
        fresh_store.generate_many(["fine", "  "], mode="text")
    with pytest.raises(ams.InvalidInput):
        fresh_store.generate_many("not a list", mode="text")
    with pytest.raises(ams.InvalidInput):
        fresh_store.generate_many(["a", "b"], mode="text", memory_ids=[[ids[0]]])
    with pytest.raises(ams.MemoryNotFound):
        fresh_store.generate_many(["a"], mode="text", memory_ids=[["no-such-id"]])
    with pytest.raises(ams.InvalidInput):
        fresh_store.generate_many(["a"], batch_size=0)
    assert [m.access_count for m in fresh_store.get_all()] == before  # nothing was touched
    gens = fresh_store.generate_many(["a", "b"], mode="text", memory_ids=[[ids[1]], [ids[1], ids[2]]],
                                     max_new_tokens=2)
    assert [g.memory_ids for g in gens] == [[ids[1]], [ids[1], ids[2]]]
    assert [m.access_count for m in fresh_store.get_all()] == [0, 2, 1]  # a memory used twice counts twice


def test_full_mode_left_truncates_a_long_history(store_path, tiny_backbone_dir):
    cfg = ams.MemoryConfig(max_context_tokens=256)
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, config=cfg) as mem:
        mem.write_many([f"Fact number {i}: the code word is {w}." for i, w in enumerate(["alpha", "beta"] * 20)])
        g = mem.generate("What is the code word?", mode="full", max_new_tokens=4)
        assert g.truncated and g.in_tokens <= 256


def test_codec_sets_train_at_64_and_no_large_field_stays_raw(fresh_store):
    texts = [f"Memory {i}: I visited place number {i} with friend {i % 7}." for i in range(70)]
    fresh_store.write_many(texts[:30])  # the sentence set holds 2 fields: 60 vectors, not yet 64
    assert fresh_store.verify()["codec_sets"] == {"sentence": None, "salient": None, "hidden": None}
    fresh_store.write_many(texts[30:40])
    assert fresh_store.verify()["codec_sets"] == {"sentence": 1, "salient": None, "hidden": None}
    fresh_store.write_many(texts[40:])
    report = fresh_store.verify()  # raises if any field of width >= d_model is still raw
    assert report["codec_sets"] == {"sentence": 1, "salient": 1, "hidden": 1}
    versions = {v for _, v, _ in fresh_store.store.vectors("default", "hidden")}
    assert versions == {1}
    hit = fresh_store.search(texts[65], k=1)[0]  # decoded fields still retrieve exactly
    assert hit.text == texts[65]


def test_codec_error_on_memories_not_used_to_train_it(fresh_store):
    """Median relative reconstruction error <= 0.15 on real MiniLM vectors the set never saw."""
    texts = [f"Note {i}: {w} is something I think about on {d}." for i, (w, d) in enumerate(
        (w, d) for w in ["gardening", "jazz", "taxes", "my sister", "chess", "rain", "coffee", "Rome", "running"]
        for d in ["Mondays", "weekends", "holidays", "mornings", "late nights", "birthdays", "Fridays", "winter"])]
    fresh_store.write_many(texts[:32])  # 32 contents + 32 contexts: the set trains on exactly these
    assert fresh_store.registry.latest("sentence") == 1
    raw = fresh_store.embedder.encode(texts[32:]).numpy()
    fresh_store.write_many(texts[32:])
    stored = fresh_store._decoded(fresh_store.store.vectors("default", "content")[32:], "content")
    err = np.linalg.norm(stored - raw, axis=1) / np.linalg.norm(raw, axis=1)
    assert np.median(err) <= 0.15


@pytest.mark.parametrize("salient_tokens", [0, 8])
def test_prefix_has_the_backbone_width_and_token_norm(tiny_backbone_dir, tmp_path, salient_tokens):
    from ams.config import MemoryConfig, PrefixConfig

    fresh_store = ams.Memory.open(tmp_path / "p.db", backbone=tiny_backbone_dir,
                                  config=MemoryConfig(prefix=PrefixConfig(salient_tokens=salient_tokens,
                                                                          salient_memories=0)))  # every memory's
    fresh_store.write_many(FACTS)
    points = fresh_store._query_points("Where does Tomas live?", None, 1.7e9)
    rows = fresh_store._retrieve(points, 3, "Where does Tomas live?", 1.7e9, {})[0]
    prefix, _ = fresh_store._prefix(fresh_store._prefix_inputs("Where does Tomas live?", points, rows, 1.7e9), rows)
    cfg = fresh_store.config.prefix
    bb = fresh_store.backbone
    salient = [t for r in rows for t in bb.salient_ids([fresh_store.get(fresh_store._ids[r]).text], salient_tokens)[0]]
    assert (0 < len(salient) <= len(rows) * salient_tokens) or salient_tokens == 0 == len(salient)
    assert prefix.shape == (len(salient) + cfg.slots, bb.d_model)
    # salient-token slots are the words' own embeddings at init; pooled slots have the mean token norm
    if salient:
        torch.testing.assert_close(prefix[: len(salient)], bb.embed(salient))
    norms = prefix[len(salient):].norm(dim=-1)
    assert np.allclose(norms.numpy(), bb.token_embedding_norm, rtol=0.05)
    fresh_store.close()


@pytest.mark.parametrize("order", ["content_first", "surprisal"])
def test_a_prefix_carries_the_words_of_the_attended_memory_only_and_reads_no_others(tiny_backbone_dir, tmp_path,
                                                                                      monkeypatch, order):
    from ams.config import MemoryConfig, PrefixConfig

    query, now = "Where does Tomas live?", 1.7e9
    with ams.Memory.open(tmp_path / "m.db", backbone=tiny_backbone_dir, config=MemoryConfig(
            prefix=PrefixConfig(salient_tokens=4, salient_memories=1, salient_order=order))) as mem:
        mem.write_many(FACTS)
        bb = mem.backbone
        # a training example's view holds every retrieved memory's words and says whose each is
        rows = mem._retrieve(mem._query_points(query, None, now), 3, query, now, {})[0]  # three, ungated
        plan = mem._plan(query, "hybrid", 3, 30, None, rows, now, example=True)
        inputs = plan.inputs
        words = [bb.salient_ids([mem.get(mem._ids[r]).text], 4, order=order)[0] for r in rows]
        assert inputs["token_ids"].tolist() == [t for w in words for t in w]
        assert inputs["token_memory"].tolist() == [k for k, w in enumerate(words) for _ in w]
        _, w = mem.attention(**{k: {b: t[None] for b, t in v.items()} if isinstance(v, dict) else v[None]
                                for k, v in inputs.items() if not k.startswith("token_")})
        top = int(((w["topic"] + w["context"]) / 2).argmax())
        assert 0 < len(words[top]) < len(inputs["token_ids"])
        # answering, the attention comes first and only the attended memory's text is read for its words
        read: list[list[str]] = []
        real = bb.salient_ids
        monkeypatch.setattr(bb, "salient_ids", lambda texts, m, **kw: read.append(list(texts)) or real(texts, m, **kw))
        answer = mem._plan(query, "hybrid", 3, 30, None, rows, now)
        assert "token_ids" not in answer.inputs
        assert read == [[mem.get(mem._ids[rows[top]]).text]]
        assert answer.prefix.shape[0] == len(words[top]) + mem.config.prefix.slots
        torch.testing.assert_close(answer.prefix[: len(words[top])], bb.embed(words[top]))
        torch.testing.assert_close(answer.prefix, plan.prefix)  # the same prefix either way
        chosen = [mem._ids[r] for r in rows]
        assert mem.generate(query, mode="prefix", max_new_tokens=2, memory_ids=chosen).prefix_slots == answer.prefix.shape[0]


@pytest.mark.parametrize("hybrid_text", ["retrieved", "chosen_first", "chosen"])
def test_hybrids_prompt_shows_the_memories_as_the_store_says(tiny_backbone_dir, tmp_path, hybrid_text):
    from ams.config import MemoryConfig, PrefixConfig

    query, now = "Where does Tomas live?", 1.7e9
    with ams.Memory.open(tmp_path / "h.db", backbone=tiny_backbone_dir, config=MemoryConfig(
            prefix=PrefixConfig(salient_tokens=4, hybrid_text=hybrid_text))) as mem:
        mem.write_many(FACTS)
        rows = mem._retrieve(mem._query_points(query, None, now), 3, query, now, {})[0][::-1]  # given worst first
        plan = mem._plan(query, "hybrid", 3, 30, None, rows, now)
        _, relevance = mem._prefix(mem._prefix_inputs(query, mem._query_points(query, None, now), rows, now), rows)
        top = rows[int(relevance.argmax())]
        assert top != rows[0]  # so the channel's choice moves
        order = rows if hybrid_text == "retrieved" else [top, *(r for r in rows if r != top)]
        assert plan.rows == order  # Generation.memory_ids: best first, by the channel here
        prompt = mem.backbone.decode(plan.ids)
        shown = order[:1] if hybrid_text == "chosen" else order
        at = [prompt.find(mem.get(mem._ids[r]).text) for r in rows]
        assert [a >= 0 for a in at] == [r in shown for r in rows]
        assert sorted(a for a in at if a >= 0) == [at[rows.index(r)] for r in shown]  # in that order
        # a training example shows them in retrieval order whatever the store says: the channel
        # being trained does the choosing
        example = mem._plan(query, "hybrid", 3, 30, None, rows, now, example=True)
        assert example.rows == rows
        assert example.ids == mem._plan(query, "text", 3, 30, None, rows, now).ids
        assert mem.generate(query, mode="hybrid", max_new_tokens=2, now=now,
                            memory_ids=[mem._ids[r] for r in rows]).memory_ids == [mem._ids[r] for r in order]


def test_the_store_chooses_by_the_channels_attention_and_retrievals_score_together(tiny_backbone_dir, tmp_path):
    from ams.config import MemoryConfig, PrefixConfig

    query, now = "Where does Tomas live?", 1.7e9
    with ams.Memory.open(tmp_path / "c.db", backbone=tiny_backbone_dir, config=MemoryConfig(
            prefix=PrefixConfig(salient_tokens=4, salient_memories=1, choice_retrieval_weight=14.0))) as mem:
        mem.write_many(FACTS)
        points = mem._query_points(query, None, now)
        rows = mem._retrieve(points, 3, query, now, {})[0][::-1]  # the attention's choice last
        inputs = mem._prefix_inputs(query, points, rows, now)
        _, alone = mem._prefix(inputs, rows)  # memories given by id: the attention alone
        attention = mem.attention(**{k: {b: t[None] for b, t in v.items()} if isinstance(v, dict) else v[None]
                                     for k, v in inputs.items()})[1]
        torch.testing.assert_close(alone, mem.attention.relevance(attention)[0].clamp_min(1e-30).log())
        assert int(alone.argmax()) == 2
        fused = np.array([1.0, 0.0, 0.0])  # retrieval sure of the first: it outweighs the attention
        prefix, choice = mem._prefix(inputs, rows, fused)
        torch.testing.assert_close(choice, alone + 14.0 * torch.tensor([1.0, 0.0, 0.0]))
        assert float(alone[2] - alone[0]) < 14.0 and int(choice.argmax()) == 0
        words = mem.backbone.salient_ids([mem.get(mem._ids[rows[0]]).text], 4)[0]  # so the words are its
        torch.testing.assert_close(prefix[: len(words)], mem.backbone.embed(words))
        assert prefix.shape[0] == len(words) + mem.config.prefix.slots


def test_answer_time_prefix_settings_can_change_on_reopen_and_bad_ones_are_refused(tiny_backbone_dir, tmp_path):
    from ams.config import MemoryConfig, PrefixConfig

    path = tmp_path / "a.db"
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        mem.write_many(FACTS)
    answer_time = PrefixConfig(hybrid_text="retrieved", choice_retrieval_weight=0.0, salient_memories=2)
    with ams.Memory.open(path, backbone=tiny_backbone_dir, config=MemoryConfig(prefix=answer_time)) as mem:
        assert mem.config.prefix.hybrid_text == "retrieved" and mem.config.prefix.choice_retrieval_weight == 0
    with pytest.raises(ams.StoreMismatch):  # the slots are part of what is stored: not an answer-time setting
        ams.Memory.open(path, backbone=tiny_backbone_dir, config=MemoryConfig(prefix=PrefixConfig(slots=2)))
    with pytest.raises(ams.StoreMismatch, match="context_turns"):  # nor the turns a context point was read with
        ams.Memory.open(path, backbone=tiny_backbone_dir, config=MemoryConfig(context_turns=5))
    for bad in ({"hybrid_text": "all"}, {"choice_retrieval_weight": -1.0}):
        with pytest.raises(ValueError):
            PrefixConfig(**bad)


def test_context_bundle_reads_the_session(fresh_store):
    fresh_store.write_many([{"text": "We talked about my trip to Peru.", "session": "trip"},
                            {"text": "The hotel had a great view.", "session": "trip"},
                            {"text": "Our quarterly report is due.", "session": "work"},
                            {"text": "The hotel had a great view.", "session": "work"},
                            {"text": "Peru was amazing, I want to go back.", "session": "chat"}])
    for _ in range(2):  # same sentence twice: only the conversations differ
        hits = fresh_store.search("The hotel had a great view.", k=2, session="chat")
        assert hits[0].session == "trip" and hits[1].session == "work"
        assert hits[0].scores["topic"] == pytest.approx(hits[1].scores["topic"], abs=1e-4)
        assert hits[0].scores["context"] > hits[1].scores["context"]
        fresh_store.write("Lima and Cusco were my favourite cities.", session="chat")


@pytest.mark.parametrize("text, question, expected", [
    ("My wife has a cat called Nimbus.", False, {((), "wife")}),
    ("My daughter's cat's name is Marble.", False, {((), "daughter")}),
    ("I adopted a beagle named Waffles.", False, {((), "")}),
    ("My dog chewed our sofa", False, {((), "")}),  # "my" before a thing: the writer's
    ("I’m allergic to cats", False, {((), "")}),
    ("Your army cousin is here", False, set()),  # no "my" or "our" inside other words
    ("I visit my mother every Sunday", False, {((), ""), ((), "mother")}),
    ("My best friend and my older sisters moved", False, {((), "friend"), ((), "sister")}),
    ("Our son-in-law cooks", False, {((), "son-in-law")}),
    ("Kofi Eriksen is allergic to sesame.", False, {(("eriksen", "kofi"), "")}),
    ("Lea Novak's sister lives in Oslo.", False, {(("lea", "novak"), "sister")}),
    ("The train was late.", False, set()),
    ("Which name did my wife give the cat?", True, {((), "wife")}),
    ("Where does Lea Novak's sister live?", True, {(("lea", "novak"), "sister")}),
    ("Where does Kofi live?", True, {(("kofi",), "")}),  # a question's lone capitalised word is a name
    ("Where does Kofi live?", False, set()),
])
def test_holders_say_whom_a_memory_or_question_is_about(text, question, expected):
    from ams.turns import holders

    assert {(tuple(sorted(n)), r) for n, r in holders(text, question=question)} == expected


def test_about_others_needs_people_on_both_sides_and_none_shared():
    from ams.turns import USER, about_others

    wife, daughter = (frozenset(), "wife"), (frozenset(), "daughter")
    kofi, kofi_eriksen = (frozenset({"kofi"}), ""), (frozenset({"kofi", "eriksen"}), "")
    assert about_others(frozenset({daughter}), frozenset({wife}))
    assert about_others(frozenset({USER}), frozenset({wife}))  # "I have a cat" is not my wife's cat
    assert about_others(frozenset({kofi_eriksen}), frozenset({USER}))
    assert not about_others(frozenset({USER, wife}), frozenset({wife}))
    assert not about_others(frozenset({kofi_eriksen}), frozenset({kofi}))  # one shared name word
    assert not about_others(frozenset(), frozenset({wife}))  # about no one in particular
    assert not about_others(frozenset({daughter}), frozenset())  # a question about no one
    assert about_others(frozenset({(frozenset({"lea"}), "sister")}), frozenset({(frozenset({"lea"}), "")}))


def test_the_holder_channel_marks_facts_about_someone_the_question_does_not_ask_about(store_path, tiny_backbone_dir):
    from ams.config import MemoryConfig, RetrievalConfig

    texts = ["My wife has a cat called Nimbus.", "My daughter's cat is called Marble.",
             "Kofi Eriksen's cat is called Pixel.", "I have a cat called Tofu."]
    config = MemoryConfig(retrieval=RetrievalConfig(holder_weight=0.5))
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir, config=config) as mem:
        ids = mem.write_many(texts)
        mem.add_messages([{"role": "user", "name": "Ana", "content": "my daughter's cat is called Pepper"}])

        def holder(question: str) -> dict[str, float]:
            return {h.text: h.scores["holder"] for h in mem.search(question, k=5)}

        assert holder("What is my wife's cat called?") == {
            texts[0]: 0.0, texts[1]: -1.0, texts[2]: -1.0, texts[3]: -1.0,
            "my daughter's cat is called Pepper": 0.0}  # a dialogue turn: the people channel's to judge
        assert holder("What is my cat called?") == {
            texts[0]: -1.0, texts[1]: -1.0, texts[2]: -1.0, texts[3]: 0.0, "my daughter's cat is called Pepper": 0.0}
        assert holder("What is Kofi's cat called?")[texts[2]] == 0.0
        assert set(holder("What cats are there?").values()) == {0.0}  # a question about no one in particular
        hits = mem.search("What is my wife's cat called?", k=5)
        by_text = {h.text: h for h in hits}
        assert by_text[texts[1]].score == pytest.approx(
            sum(by_text[texts[1]].scores[c] * w for c, w in _fused_weights(mem).items()), abs=1e-5)
        mem.update(ids[1], "My wife's cat sleeps all day.")  # an update changes whom the fact is about
        assert holder("What is my wife's cat called?")["My wife's cat sleeps all day."] == 0.0
    with ams.Memory.open(store_path, backbone=tiny_backbone_dir,
                         config=MemoryConfig(retrieval=RetrievalConfig(holder_weight=0.0))) as mem:
        assert all("holder" not in h.scores for h in mem.search("What is my wife's cat called?", k=5))


def _fused_weights(mem) -> dict[str, float]:
    """Each channel's weight in a fact store's fused score, as `Memory._retrieve` sets them."""
    rc = mem.config.retrieval
    return {"topic": rc.topic_weight, "context": rc.context_weight, "temporal": rc.temporal_weight,
            "lexical": rc.lexical_weight, "recency": rc.recency_weight, "holder": rc.holder_weight,
            "question": rc.question_penalty}


def test_relative_gate_keeps_the_best_memory_whatever_the_sign():
    from ams.memory import _gate

    assert _gate([4, 7, 9], np.array([1.0, 0.85, 0.5]), 0.8) == [4, 7]
    assert _gate([4, 7], np.array([-0.1, -0.3]), 0.8) == [4, 7]
    assert _gate([], np.zeros(0), 0.8) == []


class TestBadInput:
    @pytest.mark.parametrize("text", ["", "   \n\t", None, 42, b"bytes", ["a"]])
    def test_bad_text_is_rejected_and_nothing_is_written(self, fresh_store, text):
        with pytest.raises(ams.InvalidInput):
            fresh_store.write(text)
        assert fresh_store.get_all() == []

    def test_text_longer_than_the_budget(self, fresh_store):
        with pytest.raises(ams.TextTooLong, match="Split it"):
            fresh_store.write("word " * (fresh_store.max_memory_tokens + 5))
        assert fresh_store.get_all() == []

    def test_unknown_mode_and_bad_numbers(self, fresh_store):
        fresh_store.write(FACTS[0])
        with pytest.raises(ams.UnknownMode):
            fresh_store.generate("hi", mode="telepathy")
        with pytest.raises(ams.InvalidInput):
            fresh_store.generate("hi", k=0)
        with pytest.raises(ams.InvalidInput):
            fresh_store.search("hi", k=-1)

    @pytest.mark.parametrize("item", [{"text": "x", "role": "robot"}, {"text": "x", "ts": "yesterday"},
                                      {"text": "x", "ts": float("nan")}, {"text": "x", "meta": {"f": object()}},
                                      {"text": "x", "colour": "red"}, 3.5])
    def test_bad_items(self, fresh_store, item):
        with pytest.raises(ams.InvalidInput):
            fresh_store.write_many([FACTS[0], item])
        assert fresh_store.get_all() == []

    def test_missing_ids(self, fresh_store):
        for call in (fresh_store.get, fresh_store.delete, fresh_store.history):
            with pytest.raises(ams.MemoryNotFound):
                call("no-such-id")
        with pytest.raises(ams.MemoryNotFound):
            fresh_store.update("no-such-id", "text")

    def test_non_sqlite_file(self, tmp_path, tiny_backbone_dir):
        p = tmp_path / "notes.db"
        p.write_text("these are my notes, not a database")
        with pytest.raises(ams.StoreCorrupted):
            ams.Memory.open(p, backbone=tiny_backbone_dir)
        assert p.read_text() == "these are my notes, not a database"

    def test_foreign_sqlite_database(self, tmp_path, tiny_backbone_dir):
        p = tmp_path / "other.db"
        with sqlite3.connect(p) as conn:
            conn.execute("CREATE TABLE invoices (n INTEGER)")
        with pytest.raises(ams.StoreCorrupted, match="not an AMS store"):
            ams.Memory.open(p, backbone=tiny_backbone_dir)

    def test_corrupted_store(self, store_path, tiny_backbone_dir):
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
            mem.write_many(FACTS)
        data = bytearray(store_path.read_bytes())
        data[100:4096] = b"\xff" * (4096 - 100)  # the page after the header: the schema
        store_path.write_bytes(bytes(data))
        with pytest.raises(ams.StoreCorrupted):
            ams.Memory.open(store_path, backbone=tiny_backbone_dir)

    def test_other_backbone_raises_store_mismatch(self, store_path, tiny_backbone_dir, other_backbone_dir):
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
            mem.write(FACTS[0])
        with pytest.raises(ams.StoreMismatch):
            ams.Memory.open(store_path, backbone=other_backbone_dir)

    def test_use_after_close(self, store_path, tiny_backbone_dir):
        mem = ams.Memory.open(store_path, backbone=tiny_backbone_dir)
        mem.close()
        with pytest.raises(ams.StoreClosed):
            mem.write(FACTS[0])


def test_throwaway_store(tiny_backbone_dir):
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        mid = mem.write(FACTS[0])
        assert mem.get(mid).text == FACTS[0]


def test_a_base_model_answer_ends_at_the_end_of_its_line(tiny_backbone_dir):
    """Without a chat template the prompt is a "Question: ... Answer:" frame; the answer is one line."""
    from ams.backbone import load_backbone

    bb = load_backbone(tiny_backbone_dir)  # a private instance: the shared one keeps its template
    chat = bb.generate_batch([bb.chat_ids("Tell me about my dog.")], max_new_tokens=24)
    bb.tokenizer.chat_template = None
    ids = bb.chat_ids("Tell me about my dog.")
    assert bb.decode(ids).endswith("Answer:")
    base = bb.generate_batch([ids, bb.chat_ids("And my cat?")], max_new_tokens=24)
    assert all("\n" not in t for t in base) and isinstance(chat[0], str)



def test_generate_batch_says_which_replies_ended_their_turn(tiny_backbone_dir):
    """A reply cut at the token limit is told apart from one the model ended, and a cut reply's
    answer ids carry no end of turn."""
    from ams.backbone import load_backbone

    bb = load_backbone(tiny_backbone_dir)  # private: its end tokens are changed below
    prompts = [bb.chat_ids("Tell me about my dog."), bb.chat_ids("And my cat?")]
    with torch.no_grad():
        first = int(bb.model(input_ids=torch.tensor([prompts[0]])).logits[0, -1].argmax())  # its greedy token
    _, ended = bb.generate_batch(prompts, max_new_tokens=1, return_ended=True)
    assert ended[0] is (first in bb._eos_ids)
    bb._eos_ids = sorted(set(bb._eos_ids) | {first})  # the first row's greedy token now ends a turn
    _, ended = bb.generate_batch(prompts, max_new_tokens=1, return_ended=True)
    assert ended[0] is True
    assert bb.answer_ids("Waffles", ended=False) == bb.tokenize("Waffles")
    assert bb.answer_ids("Waffles")[-1] == bb.tokenizer.eos_token_id

def test_encode_precision_is_chosen_and_bf16_stays_close_to_fp32(tiny_backbone_dir):
    """A bf16 encoding copy leaves the model (and so generation and the identity) as loaded, and
    encodes within bf16's rounding of fp32; fp32 encodes exactly as the model's own forward pass."""
    from ams.backbone import load_backbone
    from ams.backbone.hf import _native_bf16

    exact, half = load_backbone(tiny_backbone_dir, encode_dtype="float32"), load_backbone(tiny_backbone_dir,
                                                                                          encode_dtype="bfloat16")
    auto = load_backbone(tiny_backbone_dir)
    assert auto.encode_dtype == (torch.bfloat16 if _native_bf16(torch.device("cpu")) else torch.float32)
    a, b = exact.encode(FACTS), half.encode(FACTS)
    assert half.model.dtype == torch.float32 and half._encoder.dtype == torch.bfloat16
    assert half.identity == exact.identity
    for x, y in ((a.hidden, b.hidden), (a.salient, b.salient)):
        assert not torch.equal(x, y)  # the copy really ran in bf16
        assert torch.nn.functional.cosine_similarity(x, y).min() > 0.99
    with torch.no_grad():
        ids = torch.tensor([exact._with_bos(exact.tokenize(FACTS[0]))])
        h = exact.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0)
    torch.testing.assert_close(exact.encode(FACTS[:1]).hidden[0], h)
    with pytest.raises(ams.InvalidInput, match="encode_dtype"):
        load_backbone(tiny_backbone_dir, encode_dtype="float16")
    with pytest.raises(ams.InvalidInput, match="SPCE"):
        load_backbone("spce:" + tiny_backbone_dir, encode_dtype="bfloat16")
    assert load_backbone("spce:" + tiny_backbone_dir).encode_dtype == torch.float32


@pytest.mark.parametrize("codec,size", [("pq", 16), ("kakeya-pq", 16)])
def test_a_large_set_moves_every_row_to_pq_codes_and_still_finds_them(tmp_path, tiny_backbone_dir, codec, size):
    cfg = ams.MemoryConfig(kakeya=ams.KakeyaConfig(growth=1.5, pq_min_train=1024, codec=codec,
                                           pq_bytes={"sentence": 16, "salient": 8, "hidden": 8}))
    path = tmp_path / "big.db"
    with ams.Memory.open(path, backbone=tiny_backbone_dir, config=cfg) as mem:
        mem.write_many(NOTES[:300])  # 600 sentence vectors: a dense int8 codec
        assert {mem.registry.codec("sentence", v).code_size for _, v, _ in mem.store.vectors(None, "content")} == {392}
        mem.write_many(NOTES[300:520])  # 1040 >= 1.5 x 600 and >= pq_min_train: the first PQ version
        for field in ("content", "context"):
            sizes = {len(code) for _, _, code in mem.store.vectors(None, field)}
            assert sizes == {size}, field  # every earlier row was re-coded, none keeps 392 bytes
        assert {k for s, _, _, k, _ in mem.store.codecs() if s == "sentence"} == {
            "kakeya", "pq" if codec == "pq" else "kakeya"}
        assert mem.search(NOTES[7], k=1)[0].text == NOTES[7]
        assert mem.search(NOTES[400], k=1)[0].text == NOTES[400]
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        assert mem.search(NOTES[7], k=1)[0].text == NOTES[7]
        assert mem.verify()["memories"] == 520


def test_a_retrain_past_max_train_reads_a_sample_and_keeps_the_growth_schedule(tmp_path, tiny_backbone_dir):
    """Past `max_train` vectors a set trains its next version on the vectors of a seeded sample of
    memories, read by lookups, not on every stored vector; growth still counts every vector, a
    second store written alike trains the same codecs, and every row still decodes and is found."""
    cfg = ams.MemoryConfig(kakeya=ams.KakeyaConfig(min_entries=64, growth=2, max_train=128))
    reads: list[tuple[str, bool, int]] = []  # (field, sampled, rows read) of every training read

    codecs = []
    for name in ("a.db", "b.db"):
        with ams.Memory.open(tmp_path / name, backbone=tiny_backbone_dir, config=cfg) as mem:
            columns = mem.store.vector_columns

            def spy(user_id, field, *, version=None, seqs=None, columns=columns):
                out = columns(user_id, field, version=version, seqs=seqs)
                reads.append((field, seqs is not None, len(out[0])))
                return out
            mem.store.vector_columns = spy
            mem.write_many(NOTES[:100])  # sentence: 200 vectors, over max_train; salient, hidden: 100
            gone = [m.id for m in mem.get_all(limit=100)[::2]]
            for mid in gone:  # half the memories deleted: the sample must still find about max_train
                mem.delete(mid)
            mem.write_many(NOTES[100:300])  # 500 vectors >= 2 x 200: the sentence set's next version
            trained = mem.registry.sets["sentence"].trained_at
            assert max(trained.values()) == 2 * len(mem)  # every live memory's two fields, not the sample
            for note in (NOTES[1], NOTES[250]):  # a deleted note's twin survives; the rows decode
                assert mem.search(note, k=1)[0].text == note
            codecs.append([bytes(row[4]) for row in mem.store.codecs()])
    sampled = [(f, n) for f, s, n in reads if s]
    assert {f for f, _ in sampled} >= {"content", "context", "salient", "hidden"}
    assert all(32 <= n <= 96 for f, n in sampled if f in ("content", "context")), sampled  # ~max_train / 2 each
    assert all(n <= 200 for _, s, n in reads if not s)  # read whole only while a set is small
    assert codecs[0] == codecs[1]  # the sample is seeded


def test_a_store_from_before_codec_kinds_trains_pq_next_and_keeps_its_kakeya_versions(tmp_path, tiny_backbone_dir):
    """A store of the release before plain PQ (schema 004: Kakeya-PQ codes, `pq_bytes` counting
    sub-quantisers, no codec kinds) migrates on open: its next version is plain PQ at the same bytes
    a code, and the rows of both kinds decode, verify and are found, then and after reopening."""
    cfg = ams.MemoryConfig(kakeya=ams.KakeyaConfig(growth=1.5, pq_min_train=1024, codec="kakeya-pq",
                                           pq_bytes={"sentence": 16, "salient": 14, "hidden": 14}))
    path = tmp_path / "old.db"
    with ams.Memory.open(path, backbone=tiny_backbone_dir, config=cfg) as mem:
        mem.write_many(NOTES[:520])  # the sentence set's first version: Kakeya-PQ, 16-byte codes
    con = sqlite3.connect(path)  # rewrite it as the previous release left it
    with con:
        stored = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        del stored["kakeya"]["codec"]
        stored["kakeya"]["pq_bytes"] = {"sentence": 10, "salient": 8, "hidden": 8}  # sub-quantisers then
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'", [json.dumps(stored)])
        con.execute("ALTER TABLE codecs DROP COLUMN kind")
        con.execute("DELETE FROM migrations WHERE name = '005_codec_kinds'")
    con.close()
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        assert mem.config.kakeya.codec == "pq"
        assert mem.config.kakeya.pq_bytes == {"sentence": 16, "salient": 14, "hidden": 14}
        mem.write_many(NOTES[520:800])  # 1600 >= 1.5 x 1040: after these rows, a new version, plain PQ
        mem.write_many(NOTES[800:900])  # coded by it
        kinds = {v: k for s, v, _, k, _ in mem.store.codecs() if s == "sentence"}
        rows = {v: len(code) for _, v, code in mem.store.vectors(None, "content")}
        assert [kinds[v] for v in sorted(rows)] == ["kakeya", "pq"]  # no row was re-coded: Kakeya-PQ rows keep theirs
        assert set(rows.values()) == {16}
        assert mem.search(NOTES[7], k=1)[0].text == NOTES[7]
        assert mem.search(NOTES[850], k=1)[0].text == NOTES[850]
    with ams.Memory.open(path, backbone=tiny_backbone_dir) as mem:
        assert mem.verify()["memories"] == 900
        assert mem.search(NOTES[7], k=1)[0].text == NOTES[7]
        assert mem.search(NOTES[850], k=1)[0].text == NOTES[850]


def test_closing_a_memory_stops_its_indexes_background_scan_builds(fresh_store, monkeypatch):
    from ams import retrieval

    add = retrieval.CodedScan.add

    def slow_add(self, rows, x):  # a build of 3,000 rows in 47 chunks of 64, 0.02 s each
        time.sleep(0.02)
        add(self, rows, x)
    monkeypatch.setattr(retrieval, "STOP_CHUNK", 64)
    monkeypatch.setattr(retrieval.CodedScan, "add", slow_add)
    index = fresh_store._index["topic"]  # rows enough for a coded scan, without writing 3,000 memories
    index.add(np.random.default_rng(0).standard_normal((3000, index.d)).astype(np.float32))
    monkeypatch.setattr(index, "exact_below", 0)
    index.candidates(index.x[0], 1)
    job = index._build
    fresh_store.close()
    assert not job.thread.is_alive() and isinstance(job.error, retrieval.BuildStopped)
