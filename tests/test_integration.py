"""The real shipped SmolLM2-135M-Instruct: the seed session written, closed, reopened and answered."""

import pytest

import ams
from ams.attention import shipped_channel
from ams.backbone import cache_dir
from ams.session import is_hit, load_session, seed_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    session = load_session(seed_path())
    path = tmp_path_factory.mktemp("seed") / "seed.db"
    with ams.Memory.open(path) as mem:
        mem.write_many([f.text for f in session.facts])
        before = {m: [mem.generate(q.text, mode=m, max_new_tokens=30).text for q in session.queries]
                  for m in ("hybrid", "text")}
        searches = [[h.id for h in mem.search(q.text, k=3)] for q in session.queries]
    return path, session, before, searches


def test_shipped_backbone_is_cached_as_safetensors():
    ams.Memory.open(":memory:").close()
    target = cache_dir() / "backbones" / "smollm2-135m-instruct"
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()


def test_reopened_store_gives_the_same_answers(seed_store):
    path, session, before, searches = seed_store
    with ams.Memory.open(path) as mem:
        assert [[h.id for h in mem.search(q.text, k=3)] for q in session.queries] == searches
        for mode in ("hybrid", "text"):
            after = [mem.generate(q.text, mode=mode, max_new_tokens=30).text for q in session.queries]
            assert after == before[mode]


def test_retrieval_finds_the_gold_fact_first(seed_store, measured):
    path, session, _, _ = seed_store
    ids = {f.text: f.id for f in session.facts}
    with ams.Memory.open(path) as mem:
        top = [ids[mem.search(q.text, k=1)[0].text] for q in session.queries]
    first = sum(t in q.fact_ids for t, q in zip(top, session.queries))
    measured("seed session, gold fact first", f"{first}/{len(top)}")
    assert first >= 9


def test_hybrid_answers_at_least_seven_of_ten_and_within_one_of_text(seed_store, measured):
    _, session, before, _ = seed_store
    hits = {m: sum(is_hit(a, q.keywords, q.forbidden) for a, q in zip(before[m], session.queries)) for m in before}
    measured("seed session, hits of 10", hits)
    assert hits["hybrid"] >= 7, hits
    # measured 9 against 9 with the 12-token channel (8 against 9 with the 8-token one before it); what hybrid
    # gains over text shows on held-out sessions (BENCHMARKS.md, "Training the memory channel")
    assert hits["hybrid"] >= hits["text"] - 1, hits


def test_the_shipped_channel_is_the_default_and_its_prefix_carries_facts(seed_store, measured):
    path, session, _, _ = seed_store

    def prefix_hits(mem):
        answers = [mem.generate(q.text, mode="prefix", max_new_tokens=30).text for q in session.queries]
        return sum(is_hit(a, q.keywords, q.forbidden) for a, q in zip(answers, session.queries))

    with ams.Memory.open(path) as mem:
        assert mem.weights == str(shipped_channel("smollm2-135m-instruct").resolve())
        assert mem.default_mode == "hybrid"
        trained = prefix_hits(mem)
    with ams.Memory.open(":memory:", weights="untrained") as mem:  # the seed store keeps its choice
        mem.write_many([f.text for f in session.facts])
        assert mem.weights is None and mem.default_mode == "text"
        untrained = prefix_hits(mem)
    measured("seed session, prefix hits of 10, shipped and untrained channel", (trained, untrained))
    assert trained >= untrained + 2, (trained, untrained)  # measured: 6 against 0 (3 with 8 tokens; BENCHMARKS.md)


def test_memory_free_answers_do_not_know_the_facts(seed_store, measured):
    _, session, _, _ = seed_store
    with ams.Memory.open(":memory:") as mem:
        mem.write_many([f.text for f in session.facts])
        none = [mem.generate(q.text, mode="none", max_new_tokens=30).text for q in session.queries]
    hits = sum(is_hit(a, q.keywords) for a, q in zip(none, session.queries))
    measured("seed session, none-mode hits of 10", hits)
    assert hits <= 2


def test_store_opened_with_another_backbone_raises(tmp_path, tiny_backbone_dir):
    path = tmp_path / "s.db"
    with ams.Memory.open(path) as mem:
        mem.write("I like tea.")
    with pytest.raises(ams.StoreMismatch, match="smollm2"):
        ams.Memory.open(path, backbone=tiny_backbone_dir)


def test_batched_answers_equal_one_by_one_answers(seed_store):
    """Batching pads prompts of different lengths; greedy answers must not change (text mode does
    not read access counts, so the earlier one-by-one run is the reference)."""
    path, session, before, _ = seed_store
    with ams.Memory.open(path) as mem:
        gens = mem.generate_many([q.text for q in session.queries], mode="text", max_new_tokens=30, batch_size=8)
    assert [g.batch for g in gens] == [8] * 8 + [2] * 2
    assert [g.text for g in gens] == before["text"]


def test_the_prefix_answers_more_from_the_attended_memorys_words_than_from_every_memorys(measured):
    """Retrieval without the holder channel, which leaves more memories about other people past the
    gate beside the right one: what the choice of words is for (measured 17 hits against 13 with the
    shipped channel; 18 against 14 with the 8-token channel before it, and 19 against 18 with the
    holder channel)."""
    from ams.bench.synthetic import generate_session
    from ams.config import MemoryConfig, PrefixConfig, RetrievalConfig

    hits = {}
    for n in (0, 1):  # 0: every retrieved memory's salient words, as stores read the channel before
        session = generate_session(50, seed=3, split="heldout", n_queries=30)
        config = MemoryConfig(prefix=PrefixConfig(salient_memories=n), retrieval=RetrievalConfig(holder_weight=0))
        with ams.Memory.open(":memory:", config=config) as mem:
            mem.write_many([f.text for f in session.facts])
            answers = [mem.generate(q.text, mode="prefix", max_new_tokens=30).text for q in session.queries]
        hits[n] = sum(is_hit(a, q.keywords, q.forbidden) for a, q in zip(answers, session.queries))
    measured("prefix hits of 30 by salient_memories", hits)
    assert hits[1] >= hits[0] + 2, hits


def test_hybrid_shows_the_chosen_memory_and_answers_more_than_text(measured):
    """Held-out users the benchmark never asks (seeds 5 and 6, 50 facts), asked a day after their last
    fact: with the defaults, `hybrid`'s prompt holds the one memory the store chooses, and it answers
    more than `text`, which shows every retrieved memory (measured 41 against 28 of 50 questions; 35
    against 22 before the holder channel)."""
    from ams.bench.synthetic import generate_session
    from ams.bench.viability import ASK_AFTER_S, _fact_times

    hits = {"text": 0, "hybrid": 0}
    for seed in (5, 6):
        session = generate_session(50, seed=seed, split="heldout", n_queries=30)
        asked = [q for q in session.queries if q.keywords]
        times = _fact_times(session)
        with ams.Memory.open(":memory:") as mem:
            mem.write_many([{"text": f.text, "ts": t} for f, t in zip(session.facts, times)])
            now = max(times) + ASK_AFTER_S
            for q in asked[:5]:  # the prompt holds the first of the memories used, and none of the others
                plan = mem._plan(q.text, "hybrid", 3, 30, None, None, now)
                prompt, texts = mem.backbone.decode(plan.ids), [mem.get(mem._ids[r]).text for r in plan.rows]
                assert texts[0] in prompt and not any(t in prompt for t in texts[1:])
            for mode in hits:
                gens = mem.generate_many([q.text for q in asked], mode=mode, max_new_tokens=30, now=now)
                hits[mode] += sum(is_hit(g.text, q.keywords, q.forbidden) for g, q in zip(gens, asked))
    measured("hits of 50", hits)
    assert hits["hybrid"] >= hits["text"] + 6, hits
