"""Conversations: chat messages in, speakers and sessions kept, the lexical index in step with every
change, speaker-aware retrieval, turns shown with their neighbours, the dialogue generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ams
from ams import store as store_mod
from ams.bench.dialogue import TALK, generate_dialogue
from ams.bench.synthetic import FIRST, _split
from ams.cli import main
from ams.session import is_hit

CHAT = [
    {"role": "user", "content": "hey! how was the weekend?", "name": "Ben"},
    {"role": "user", "content": "good, we finally got a puppy", "name": "Ana"},
    {"role": "user", "content": "no way! what did you name the puppy?", "name": "Ben"},
    {"role": "user", "content": "we went with Mochi in the end", "name": "Ana"},
    {"role": "user", "content": "cute. my cat Pixel will not be pleased", "name": "Ben"},
    {"role": "user", "content": "haha. did you see the game last night?", "name": "Ana"},
    {"role": "user", "content": "yes, what a finish", "name": "Ben"},
]


def _retrieval(**settings) -> ams.MemoryConfig:
    """The default config with these retrieval settings."""
    base = ams.MemoryConfig()
    return base.model_copy(update={"retrieval": base.retrieval.model_copy(update=settings)})


def _words(mem, user, *terms):
    return {mem.get(m).text for m, _ in mem.store.lexical(user, list(terms), 10)}


class TestIngest:
    def test_add_messages_keeps_speaker_session_time_and_order(self, fresh_store):
        ids = fresh_store.add_messages(CHAT, ts=1_767_225_600)
        recs = [fresh_store.get(i) for i in ids]
        assert [r.text for r in recs] == [m["content"] for m in CHAT]
        assert [r.speaker for r in recs] == [m["name"] for m in CHAT]
        assert len({r.session for r in recs}) == 1 and recs[0].session.startswith("conv-")
        assert all(r.ts == 1_767_225_600 for r in recs)
        again = fresh_store.add_messages(CHAT[:1])  # no session given: a new conversation
        assert fresh_store.get(again[0]).session != recs[0].session

    def test_speaker_falls_back_to_the_role_and_text_parts_are_joined(self, fresh_store):
        ids = fresh_store.add_messages([
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
            {"role": "user", "content": "later", "ts": 5.0, "session": "other"}], session="s1")
        a, b, c = (fresh_store.get(i) for i in ids)
        assert (a.speaker, a.role, a.session) == ("assistant", "assistant", "s1")
        assert b.text == "first\nsecond" and (c.ts, c.session) == (5.0, "other")

    @pytest.mark.parametrize("bad, error", [
        ([{"role": "tool", "content": "x"}], ams.InvalidInput),
        ([{"role": "user", "content": "   "}], ams.EmptyText),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], ams.InvalidInput),
        ([{"role": "user", "content": 3}], ams.InvalidInput),
        ([{"role": "user", "content": "x", "mood": "happy"}], ams.InvalidInput),
        ([{"role": "user", "content": "x", "name": ""}], ams.InvalidInput),
        ([{"role": "user", "content": "x", "name": "n" * 201}], ams.InvalidInput),
        ([{"role": "user", "content": "x", "name": "\ud800"}], ams.InvalidInput),
        (["hello"], ams.InvalidInput),
        ({"role": "user", "content": "x"}, ams.InvalidInput),
    ])
    def test_a_bad_message_writes_nothing(self, fresh_store, bad, error):
        fresh_store.add_messages(CHAT[:2])
        with pytest.raises(error):
            fresh_store.add_messages([*CHAT[2:4], *bad] if isinstance(bad, list) else bad)
        assert len(fresh_store) == 2

    def test_write_takes_a_speaker_and_search_returns_it(self, fresh_store):
        fresh_store.write("My dog Biscuit chewed my shoes again.", speaker="Ana", session="s")
        hit = fresh_store.search("Biscuit", k=1)[0]
        assert hit.speaker == "Ana" and fresh_store.get_all()[0].speaker == "Ana"


class TestLexicalIndex:
    def test_follows_writes_updates_and_deletes(self, fresh_store):
        a = fresh_store.write("The beagle is called Waffles.")
        b = fresh_store.write("I live in Lisbon.")
        assert _words(fresh_store, "default", "waffles") == {"The beagle is called Waffles."}
        assert _words(fresh_store, "default", "beagles") == {"The beagle is called Waffles."}  # stemmed
        fresh_store.update(a, "The terrier is called Pepper.")
        assert _words(fresh_store, "default", "waffles") == set()
        assert _words(fresh_store, "default", "pepper") == {"The terrier is called Pepper."}
        fresh_store.delete(b)
        assert _words(fresh_store, "default", "lisbon") == set()
        assert fresh_store.store.db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")

    def test_is_scoped_by_user_and_seen_by_other_processes(self, store_path, tiny_backbone_dir):
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="a") as a, \
                ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="b") as b:
            a.write("A zebra named Stripes lives next door.")
            assert _words(b, "b", "zebra") == set()
            assert b.search("zebra Stripes", k=3) == []  # nothing of user a, even through the lexical channel
            b.write("My zebra is called Dots.")
            assert _words(a, "a", "zebra") == {"A zebra named Stripes lives next door."}
            assert [h.text for h in a.search("zebra", k=3)] == ["A zebra named Stripes lives next door."]

    def test_a_users_best_matches_are_found_below_other_users_better_ones(self, store_path, tiny_backbone_dir):
        """The shared index's top matches may all be another user's: this user's best still come back,
        as a search restricted to this user finds them, in the same order."""
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="a") as a, \
                ams.Memory.open(store_path, backbone=tiny_backbone_dir, user_id="b") as b:
            a.write_many([f"An otter {i} swims." for i in range(3)] + ["Nothing to see."])
            b.write_many([f"Otter otter otter {i}, otters everywhere." for i in range(8)])
            b.write_many([f"One otter {i} on a long walk along the river bank today." for i in range(3)])

            def reference(user, limit):
                return a.store.db.execute(
                    "SELECT m.id, -bm25(memories_fts) AS s FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid"
                    " WHERE memories_fts MATCH '\"otter\"' AND m.user_id = ? ORDER BY s DESC, m.seq LIMIT ?",
                    [user, limit]).fetchall()
            for user in ("a", "b"):
                for limit in (1, 2, 4, 8, 11, 50):
                    a.store._joined_for.clear()  # each limit tries the shared ranking first
                    got = a.store.lexical(user, ["otter"], limit)
                    want = reference(user, limit)
                    assert [m for m, _ in got] == [m for m, _ in want], (user, limit)
                    assert np.allclose([s for _, s in got], [s for _, s in want])
            a.store._joined_for.clear()
            assert len(a.store.lexical("a", ["otter"], 4)) == 3  # below eight better rows of b's
            assert a.store._joined_for == {"a": store_mod.JOINED_RUNS}  # so a's next searches run restricted
            assert [m for m, _ in a.store.lexical("a", ["otter"], 4)] == [m for m, _ in reference("a", 4)]
            assert a.store._joined_for == {"a": store_mod.JOINED_RUNS - 1}
            assert a.store.lexical("a", ["otter"], 0) == []

    @pytest.mark.parametrize("query", ['"', 'NEAR(a b)', "a* OR -b", "'; DROP TABLE memories; --", "AND", "^x:y"])
    def test_fts_syntax_in_a_question_is_only_words(self, fresh_store, query):
        fresh_store.write("A memory about NEAR and OR and AND.")
        fresh_store.search(query, k=1)  # no error: terms are quoted, never parsed as FTS5 syntax
        assert len(fresh_store) == 1


class TestRetrieval:
    def test_a_question_about_a_speaker_prefers_their_turns(self, fresh_store):
        fresh_store.add_messages([
            {"role": "user", "name": "Ana", "content": "my dog is called Biscuit"},
            {"role": "user", "name": "Ben", "content": "my dog is called Pepper"},
            {"role": "user", "name": "Ana", "content": "I live in Porto"},
            {"role": "user", "name": "Ben", "content": "I live in Graz"}])
        assert fresh_store.search("What is Ana's dog called?", k=1)[0].text == "my dog is called Biscuit"
        assert fresh_store.search("What is Ben's dog called?", k=1)[0].text == "my dog is called Pepper"
        assert fresh_store.search("Where does Ben live?", k=1)[0].text == "I live in Graz"
        hit = fresh_store.search("Where does Ana live?", k=1)[0]
        assert hit.text == "I live in Porto" and hit.scores["speaker"] == 1.0

    def test_a_reply_is_encoded_with_the_turn_it_answers(self, fresh_store):
        fresh_store.add_messages(CHAT)
        hits = fresh_store.search("What is the name of Ana's puppy?", k=2)
        reply = next(h for h in hits if h.text == "we went with Mochi in the end")
        # its context point reads "what did you name the puppy?" with it; the turn alone names no puppy
        assert reply.scores["context"] > reply.scores["topic"] + 0.2
        assert reply.scores["turn context"] == reply.scores["context"]

    def test_a_question_turn_ranks_below_the_statement_it_asked_for(self, fresh_store):
        fresh_store.add_messages([{"role": "user", "name": "Ben", "content": "where do you live these days?"},
                                  {"role": "user", "name": "Ana", "content": "I live in Porto these days"}])
        assert fresh_store.search("Where does Ana live these days?", k=1)[0].text == "I live in Porto these days"


    def test_a_turn_about_someone_else_is_not_about_its_speaker(self, fresh_store):
        aside, own = "I heard that Gustav Garcia's car is a red Mazda.", "I drive an old Renault"
        ids = fresh_store.add_messages([
            {"role": "user", "name": "Ana", "content": aside},
            {"role": "user", "name": "Ben", "content": "Ana's car is always spotless"},
            {"role": "user", "name": "Ana", "content": own}], session="s")
        hits = fresh_store.search("What car does Ana drive?", k=3)
        about_ana = {h.text: h for h in hits}
        assert about_ana[aside].scores["people"] == -1.0  # names only someone the question does not
        assert about_ana["Ana's car is always spotless"].scores["people"] == 1.0  # names Ana
        assert about_ana[own].scores["people"] == 0.0
        # without the channel the aside ranks second: its speaker is Ana and it is about a car
        assert [h.text for h in hits] == [own, "Ana's car is always spotless", aside]
        hit = fresh_store.search("What car does Gustav Garcia drive?", k=1)[0]
        assert hit.text == aside and hit.scores["people"] == 1.0
        # an update changes whom the turn is about
        fresh_store.update(ids[0], "I heard that cars are expensive now.")
        hit = next(h for h in fresh_store.search("What car does Ana drive?", k=3) if h.id == ids[0])
        assert hit.scores["people"] == 0.0

    def test_a_store_with_dialogue_turns_uses_its_own_pool_and_lexical_weight(self, fresh_store, monkeypatch):
        import ams.memory

        asked = []
        real = ams.memory.fuse
        monkeypatch.setattr(ams.memory, "fuse", lambda *a, **kw: asked.append(
            (kw["candidates"], kw["extra"]["lexical"][1])) or real(*a, **kw))
        rc = fresh_store.config.retrieval
        fresh_store.write("I live in Porto")
        fresh_store.search("Where do I live?")
        fresh_store.add_messages([{"role": "user", "name": "Ana", "content": "I live in Graz"}])
        fresh_store.search("Where does Ana live?")
        assert asked == [(rc.candidates, rc.lexical_weight), (rc.dialogue_candidates, rc.dialogue_lexical_weight)]
        assert rc.candidates < rc.dialogue_candidates and rc.lexical_weight > rc.dialogue_lexical_weight > 0

    @pytest.mark.parametrize("text, people", [
        ("I heard that Gustav Garcia's car is a Mazda.", {("gustav", "garcia")}),
        ("Oh btw, Elio Quinn practises Finnish with an app.", {("elio", "quinn")}),
        ("Jorge Costa is an optician.", {("jorge", "costa")}),
        ("my sister Anna's dog is called Rex", {("anna",)}),
        ("That's great! How's the dog? Let's go", set()),
        ("We flew to New York on Monday", set()),
        ("Rereading Wolf Hall for the fifth time", set()),
        ("My dog Biscuit chewed my shoes again", set()),
        ("I'm fine, I'll call Ana later", set()),
        ("Zoë Çelik's café is open", {("zoe", "celik")}),
    ])
    def test_people_a_turn_names(self, text, people):
        from ams.turns import named_people as _people

        assert _people(text) == people

    def test_a_correction_ranks_just_above_what_it_corrects(self, store_path, tiny_backbone_dir):
        said, fix = "the begonias on my balcony are finally growing", "oops, I meant figs"
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:
            ids = mem.add_messages([
                {"role": "user", "name": "Ana", "content": said},
                {"role": "user", "name": "Ben", "content": "haha nice"},
                {"role": "user", "name": "Ana", "content": fix},
                {"role": "user", "name": "Ben", "content": "I watered the tomatoes this morning"},
                {"role": "user", "name": "Ben", "content": "the roses on my balcony are growing too"}], session="s")
            question = "What is Ana growing on her balcony?"
            hits = mem.search(question, k=3)
            assert [h.text for h in hits[:2]] == [fix, said]
            assert hits[0].score == pytest.approx(hits[1].score + 1e-3, abs=1e-5)
            assert hits[0].scores["supersedes"] > 0 and hits[1].scores["supersedes"] == 0
            off = mem.config.model_copy(update={"retrieval": mem.config.retrieval.model_copy(
                update={"supersede_corrections": False})})
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir, config=off) as mem:
            texts = [h.text for h in mem.search(question, k=5)]
            assert texts.index(said) < texts.index(fix)  # on its own the short correction ranks lower
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:  # the link is rebuilt at open
            assert [h.text for h in mem.search(question, k=2)] == [fix, said]
            mem.update(ids[2], "figs are my favourite fruit")  # no longer a correction: no lift
            assert all(h.scores["supersedes"] == 0 for h in mem.search(question, k=5) if h.id == ids[2])
            mem.update(ids[2], fix)  # a correction again
            assert mem.search(question, k=1)[0].text == fix
            later = mem.add_messages([{"role": "user", "name": "Ana", "content": "no wait, it was plums"}], session="s")
            assert mem.search(question, k=1)[0].text == "no wait, it was plums"  # the latest correction
            assert mem._corrected_by == {0: [2], 2: [mem._row_of[later[0]]]}  # a chain: it corrects the correction
            mem.delete(later[0])
            assert mem.search(question, k=1)[0].text == fix  # the one before it again
            mem.delete(ids[2])
            assert mem.search(question, k=1)[0].text == said
            again = mem.add_messages([{"role": "user", "name": "Ana", "content": "sorry, it's figs"}], session="s")
            assert mem._corrected_by[0] == [2, mem._row_of[again[0]]]  # the deleted correction is passed over
            assert mem.search(question, k=1)[0].text == "sorry, it's figs"
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir) as mem:  # the same, read back
            assert mem.search(question, k=1)[0].text == "sorry, it's figs"

    def test_a_correction_takes_back_only_its_own_speakers_statement(self, fresh_store):
        fresh_store.add_messages([
            {"role": "user", "name": "Ana", "content": "my cat is called Basil"},
            {"role": "user", "name": "Ben", "content": "what's your cat called again?"},
            {"role": "user", "name": "Ben", "content": "sorry, I meant your dog"},  # Ben's, after his own question
            {"role": "user", "name": "Ana", "content": "my dog is called Rex"}], session="s")
        assert fresh_store._corrected_by == {}  # Ben's only earlier turn is a question; Ana said nothing to correct
        fresh_store.add_messages([{"role": "user", "name": "Ana", "content": "correction: Rusty, not Rex"}], session="s")
        assert fresh_store._corrected_by == {3: [4]}  # Ana's latest statement, not her cat three turns earlier
        fresh_store.add_messages([{"role": "user", "name": "Ana", "content": "oops, I meant Basil"}], session="t")
        assert fresh_store._corrected_by == {3: [4]}  # another conversation: nothing before it to correct

    @pytest.mark.parametrize("text, is_correction", [
        ("oops, I meant figs", True), ("Actually no, I mixed it up, it's Porto", True),
        ("correction: Tuesday, not Monday", True), ("wait, sorry, I said that wrong. it's Lima.", True),
        ("Sorry, I meant Oslo", True), ("my bad, it was a Mazda", True), ("scratch that, it was blue", True),
        ("I misspoke, it's Ana", True), ("no wait, it was Friday", True), ("Actually, it was Tuesday", True),
        ("sorry to hear that", False), ("actually I love that place", False), ("I meant to call you", False),
        ("I mean it, that was great", False), ("wait for me!", False), ("what do you mean?", False),
    ])
    def test_corrections_a_turn_is(self, text, is_correction):
        from ams.turns import is_correction as _is_correction

        assert _is_correction(text) == is_correction


class TestAnswerContext:
    def test_a_turn_is_shown_with_its_neighbours_once(self, store_path, tiny_backbone_dir):
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir, config=_retrieval(neighbour_turns=1)) as mem:
            ids = mem.add_messages(CHAT)
            rows = [mem._row_of[ids[3]], mem._row_of[ids[2]]]
            (block, dialogue, ts), = mem._blocks(rows)  # the second turn is inside the first one's window
            assert ts == mem.get(ids[3]).ts  # the window has the retrieved turn's time
            assert dialogue and block.split("\n  ") == [
                "Ben: no way! what did you name the puppy?", "Ana: we went with Mochi in the end",
                "Ben: cute. my cat Pixel will not be pleased"]
        with ams.Memory.open(store_path, backbone=tiny_backbone_dir, config=_retrieval()) as mem:  # the default: alone
            assert [b[:2] for b in mem._blocks([mem._row_of[ids[3]]])] == [("Ana: we went with Mochi in the end", True)]
            fact = mem.write("A plain fact.", ts=1_767_225_600)
            assert mem._blocks([len(ids)]) == [("A plain fact.", False, 1_767_225_600)] and mem.get(fact).ts == 1_767_225_600

    def test_a_dialogue_store_shows_the_reader_its_best_turn_only(self, tmp_path, tiny_backbone_dir):
        """`dialogue_relative_gate` (1 by default) rules a store that holds dialogue turns, and
        `relative_gate` a fact store; `k` memories are retrieved either way."""
        from ams.memory import _with_facts
        from ams.turns import turn_line

        q = "What is the name of Ana's puppy?"
        keep_all = _retrieval(relative_gate=0.0)
        with ams.Memory.open(tmp_path / "chat.db", backbone=tiny_backbone_dir, config=keep_all) as mem:
            mem.add_messages(CHAT)
            best = mem.search(q, k=3)
            g = mem.generate(q, mode="text", k=3, max_new_tokens=2)
            assert len(best) == 3 and best[0].score > best[1].score
            assert g.memory_ids == [best[0].id]  # the best turn, alone in the prompt
            alone = _with_facts(q, [turn_line(mem.store.memory_row(mem.user_id, best[0].id))], dialogue=True)
            assert g.in_tokens == len(mem.backbone.chat_ids(alone, system=mem.config.system_prompt))
        every_turn = _retrieval(relative_gate=0.0, dialogue_relative_gate=0.0)
        with ams.Memory.open(tmp_path / "chat.db", backbone=tiny_backbone_dir, config=every_turn) as mem:
            assert mem.generate(q, mode="text", k=3, max_new_tokens=2).memory_ids == [h.id for h in best]
        with ams.Memory.open(tmp_path / "facts.db", backbone=tiny_backbone_dir, config=keep_all) as mem:
            mem.write_many([m["content"] for m in CHAT])  # the same texts, no speakers: a fact store
            assert len(mem.generate(q, mode="text", k=3, max_new_tokens=2).memory_ids) == 3

    def test_generate_answers_from_a_transcript(self, fresh_store):
        fresh_store.add_messages(CHAT)
        g = fresh_store.generate("What is the name of Ana's puppy?", mode="text", max_new_tokens=4)
        assert fresh_store.get(g.memory_ids[0]).speaker is not None and g.in_tokens > 40


class TestGenerator:
    def test_is_seeded_and_has_the_asked_length(self):
        a, b = generate_dialogue(300, seed=3), generate_dialogue(300, seed=3)
        assert a == b and len(a.facts) == 300 and a != generate_dialogue(300, seed=4)
        assert len({f.speaker for f in a.facts}) == 3 and len({f.session for f in a.facts}) > 10
        assert [f.ts for f in a.facts] == sorted(f.ts for f in a.facts)

    @pytest.mark.parametrize("n", [100, 1000, 5000])
    def test_every_question_names_a_speaker_and_its_gold_turn_holds_the_answer(self, n):
        s = generate_dialogue(n, seed=0, n_queries=30)
        turn = {f.id: f for f in s.facts}
        assert len(s.queries) >= 15
        for q in s.queries:
            gold = turn[q.fact_ids[0]]
            assert gold.speaker in q.text and is_hit(gold.text, q.keywords)
            assert not any(w in gold.text for w in q.forbidden)
        assert any(q.forbidden for q in s.queries)  # corrections and moves are asked about

    def test_splits_share_no_speaker_or_template(self):
        train, held = generate_dialogue(1000, split="train"), generate_dialogue(1000, split="heldout")
        assert not {f.speaker for f in train.facts} & {f.speaker for f in held.facts}
        assert {f.speaker for f in held.facts} <= set(_split(FIRST, "heldout"))
        says = {t for talk in TALK.values() for t in _split(talk.say, "train")}
        held_text = {f.text.lower() for f in held.facts}
        for t in says:  # no train-only template appears in a held-out transcript
            head = t.split("{v}")[0].strip().lower()
            if len(head) > 12:
                assert not any(x.startswith(head) for x in held_text), t

    def test_rejects_bad_arguments(self):
        with pytest.raises(ValueError):
            generate_dialogue(10)
        with pytest.raises(ValueError):
            generate_dialogue(100, split="test")


def test_cli_imports_a_transcript_and_exports_speakers(tmp_path, tiny_backbone_dir, capsys):
    src, store, out = tmp_path / "chat.jsonl", tmp_path / "s.db", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps({**m, "session": "day-1"}) for m in CHAT) + "\n")
    assert main(["import", str(store), str(src), "--backbone", tiny_backbone_dir]) == 0
    assert f"imported {len(CHAT)} turns" in capsys.readouterr().out
    assert main(["export", str(store), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["speaker"] for r in rows] == [m["name"] for m in CHAT] and {r["session"] for r in rows} == {"day-1"}
    assert main(["import", str(store), str(out), "--user", "copy"]) == 0  # the export is a session file
    with ams.Memory.open(store, backbone=tiny_backbone_dir, user_id="copy") as mem:
        assert [m.speaker for m in mem.get_all()] == [m["name"] for m in CHAT]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"role": "robot", "content": "x"}]))
    assert main(["import", str(store), str(bad)]) == 2  # a typed error, nothing written
    assert "role must be one of" in capsys.readouterr().err
