"""Training the memory channel: data from real stores, losses that reach the channel, resumable runs,
weights that a store opens and remembers."""

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors import safe_open

import ams
from ams.attention import load_channel, save_channel
from ams.bench.synthetic import generate_session
from ams.bench.viability import write_session
from ams.config import MemoryConfig, PrefixConfig
from ams.errors import InvalidInput, StoreMismatch
from ams.session import is_hit
from ams.train import (
    VAL_SEEDS,
    ChannelTrainConfig,
    add_text_answers,
    build_examples,
    channel_loss,
    examples_settings,
    load_examples,
    save_examples,
    train_channel,
)


@pytest.fixture(scope="module")
def data(tiny_backbone_dir):
    common = dict(facts=(10,), queries=6, k=3, seed=0)
    return (build_examples(tiny_backbone_dir, "train", 2, **common),
            build_examples(tiny_backbone_dir, "heldout", 1, **common))


def test_examples_are_what_generate_sees(data, tiny_backbone_dir):
    train, val = data
    assert len(train) >= 8 and len(val) >= 4
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        bb = mem.backbone
        for ex in train + val:
            K = len(ex.inputs["dirn"]["topic"])
            assert 1 <= K <= 3 and -1 <= ex.gold < K
            assert ex.prompts["prefix"] == bb.chat_ids(ex.query)
            assert bb.decode(ex.prompts["hybrid"]).count(ex.query) == 1 and len(ex.prompts["hybrid"]) > len(ex.prompts["prefix"])
            assert ex.answer[-1] == bb.tokenizer.eos_token_id and bb.decode(ex.answer[:-1]) == ex.keywords[0]
            assert {ex.inputs["fiber"][b].shape[0] for b in ("temporal", "topic", "context")} == {K}
    # the two splits share no answer
    assert not {ex.keywords[0] for ex in train} & {ex.keywords[0] for ex in val}
    assert sum(ex.gold >= 0 for ex in train) > len(train) / 2


def test_the_loss_trains_the_channel_and_not_the_backbone(data, tiny_backbone_dir):
    train, _ = data
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        channel, bb = mem.attention.train(), mem.backbone
        opt = torch.optim.Adam(channel.parameters(), lr=1e-2)
        batch = train[:8]
        first = None
        for _ in range(25):
            losses = channel_loss(channel, bb, batch, "prefix", retrieval_weight=0.1)
            losses["total"].backward()
            assert channel.lifts.grad is not None and channel.lifts.grad.abs().sum() > 0
            assert all(p.grad is None for p in bb.model.parameters())
            opt.step()
            opt.zero_grad()
            first = first if first is not None else losses["answer"].item()
        # a random 2-layer model's logits are nearly uniform (NLL ~ ln V = 10.8); the prefix still moves them
        assert losses["answer"].item() < first - 0.1
        assert set(losses) == {"answer", "retrieval", "total"}


def test_training_runs_resumes_and_writes_its_outputs(data, tiny_backbone_dir, tmp_path):
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, steps=6, batch_size=4, eval_every=3, checkpoint_every=3,
                             eval_answers=4, max_new_tokens=4, lr=3e-3, warmup=2)
    full = train_channel(cfg, out_dir=tmp_path / "full", progress=False, data=data)
    assert (tmp_path / "full" / "channel.safetensors").is_file() and (tmp_path / "full" / "curves.png").is_file()
    assert [v["step"] for v in full["val"]] == [0, 3, 6]
    assert {"prefix_nll", "hybrid_nll", "prefix_hit", "hybrid_hit"} <= set(full["val"][-1])
    assert json.loads((tmp_path / "full" / "history.json").read_text())["loss"] == full["loss"]
    # killed after step 3, resumed: the same losses
    part = train_channel(cfg, out_dir=tmp_path / "resumed", progress=False, data=data, stop_at=3)
    assert len(part["loss"]) == 3 and not (tmp_path / "resumed" / "channel.safetensors").exists()
    resumed = train_channel(cfg, out_dir=tmp_path / "resumed", progress=False, data=data)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)


def test_a_run_starts_from_a_fresh_channel_even_where_one_ships(data, tiny_backbone_dir, tmp_path, monkeypatch):
    shipped = tmp_path / "package" / "channel.safetensors"
    shipped.parent.mkdir()
    _trained_weights(tiny_backbone_dir, shipped)
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, steps=1, batch_size=4, eval_every=1, eval_answers=2,
                             max_new_tokens=2, warmup=1, prefix_target="entity")
    fresh = train_channel(cfg, out_dir=tmp_path / "fresh", progress=False, data=data)
    monkeypatch.setattr(ams.memory, "shipped_channel", lambda name: shipped)  # as the package ships one
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        assert mem.weights == str(shipped.resolve())  # what a store would open with
    again = train_channel(cfg, out_dir=tmp_path / "again", progress=False, data=data)
    # the same starting point, so the same run: the recipe remakes its file whatever the package ships
    assert again["val"][0] == fresh["val"][0] and again["loss"] == fresh["loss"]


def test_a_prefix_only_run_still_validates_hybrid_against_text(data, tiny_backbone_dir, tmp_path):
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, modes=("prefix",), steps=2, batch_size=4, eval_every=2,
                             eval_answers=4, max_new_tokens=4, warmup=1)
    history = train_channel(cfg, out_dir=tmp_path / "prefix_only", progress=False, data=data)
    first, last = history["val"][0], history["val"][-1]
    assert {"prefix_hit", "hybrid_hit", "text_hit"} <= set(first) and 0 <= first["text_hit"] <= 1
    assert {"prefix_hit", "hybrid_hit"} <= set(last) and "text_hit" not in last  # text does not train
    assert (tmp_path / "prefix_only" / "curves.png").is_file()


def test_a_trained_run_answers_its_validation_questions_as_a_store_does(tiny_backbone_dir, tmp_path):
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, train_episodes=1, val_episodes=2, facts=(10,), queries=4,
                             steps=1, batch_size=4, eval_every=1, eval_answers=6, max_new_tokens=3, warmup=1,
                             prefix_target="entity")
    history = train_channel(cfg, out_dir=tmp_path / "run", progress=False)
    store, weights = history["store"], tmp_path / "run" / "channel.safetensors"
    val = load_examples(tmp_path / "run" / "examples-val.safetensors")
    asked = [ex.query for ex in val[: cfg.eval_answers]]
    assert len(asked) > 4  # past the first user's questions: both users are asked
    assert store["questions"] == len(asked)
    for mode in ("text", "prefix", "hybrid"):  # validate's questions, in its order, in every mode
        mine = [a for a in store["answers"] if a["mode"] == mode]
        assert [a["query"] for a in mine] == asked
        assert store[f"{mode}_hit"] == sum(a["hit"] for a in mine) / len(asked)
    assert json.loads((tmp_path / "run" / "history.json").read_text())["store"] == store
    # the first user's answers are a default store's with the trained weights, asked as the benchmark asks
    session = generate_session(10, seed=VAL_SEEDS, split="heldout", n_queries=4)
    with ams.Memory.open(tmp_path / "user.db", backbone=tiny_backbone_dir, weights=weights) as mem:
        assert mem.weights == str(weights.resolve())
        _, now = write_session(mem, session)
        for mode in ("text", "prefix", "hybrid"):
            mine = [a for a in store["answers"] if a["mode"] == mode]
            first = [q for q in session.queries if q.keywords and q.fact_ids]
            gens = mem.generate_many([q.text for q in first], mode=mode, k=cfg.k, max_new_tokens=3, now=now)
            assert [g.text for g in gens] == [a["answer"] for a in mine[: len(first)]]
            assert [is_hit(g.text, q.keywords, q.forbidden) for g, q in zip(gens, first)] == [
                a["hit"] for a in mine[: len(first)]]
    # without the check: no store answers
    again = train_channel(cfg, out_dir=tmp_path / "unchecked", progress=False, store_check=False)
    assert "store" not in again and again["loss"] == history["loss"]


def test_bad_recipes_are_refused():
    with pytest.raises(InvalidInput):
        ChannelTrainConfig(modes=("text",))
    with pytest.raises(InvalidInput):
        ChannelTrainConfig(facts=(5,))
    with pytest.raises(InvalidInput):
        ChannelTrainConfig(steps=0)
    with pytest.raises(InvalidInput, match="hybrid_target"):
        ChannelTrainConfig(hybrid_target="sentence")
    with pytest.raises(InvalidInput, match="prefix_target"):
        ChannelTrainConfig(prefix_target="sentence")


@pytest.mark.parametrize("trained", ["hybrid", "prefix"])
def test_steps_can_train_toward_text_modes_own_right_answers(data, tiny_backbone_dir, tmp_path, trained):
    train, val = data
    examples = [dataclasses.replace(ex) for ex in train[:4]]  # the module's examples stay as built
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        bb, channel = mem.backbone, mem.attention
        add_text_answers(bb, examples, max_new_tokens=3)
        assert all(isinstance(ex.text_answer, list) for ex in examples)
        hit, miss = examples[0], examples[1]
        hit.text_answer = bb.answer_ids(f"It is called {hit.keywords[0]}, I think")  # as a right answer is kept
        miss.text_answer = []
        assert hit.target("text") == hit.text_answer
        assert hit.target() == hit.target("entity") == hit.answer
        assert miss.target("text") == miss.answer
        entity = channel_loss(channel, bb, [hit, miss], trained, retrieval_weight=0)["answer"]
        text = channel_loss(channel, bb, [hit, miss], trained, retrieval_weight=0, target="text")["answer"]
        assert not torch.isclose(entity, text)
    # a run answers in text mode once and keeps the answers with its examples
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, modes=(trained,), **{f"{trained}_target": "text"}, steps=2,
                             batch_size=4, eval_every=2, eval_answers=2, max_new_tokens=3, warmup=1)
    assert cfg.needs_text_answers
    assert not ChannelTrainConfig(modes=(trained,), prefix_target="entity", hybrid_target="entity").needs_text_answers
    assert ChannelTrainConfig().needs_text_answers  # the default recipe: prefix steps toward text mode's answers
    history = train_channel(cfg, out_dir=tmp_path / "run", progress=False,
                            data=([dataclasses.replace(ex) for ex in train], val))
    assert 0 <= history["examples"]["train_text_right"] <= 1
    kept = load_examples(tmp_path / "run" / "examples-train.safetensors")
    assert len(kept) == len(train) and all(ex.text_answer is not None for ex in kept)


def _trained_weights(tiny_backbone_dir, path):
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        with torch.no_grad():
            mem.attention.lifts.mul_(-1.0)  # any change the untrained channel would not have
        save_channel(mem.attention, mem.backbone, path, salient_tokens=8)


def test_weights_bring_the_salient_order_they_were_trained_with(tiny_backbone_dir, tmp_path):
    from ams.config import MemoryConfig, PrefixConfig

    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        save_channel(mem.attention, mem.backbone, tmp_path / "cf.safetensors", salient_tokens=8,
                     salient_order="content_first")
        save_channel(mem.attention, mem.backbone, tmp_path / "bad.safetensors", salient_tokens=8, salient_order="odd")
    text = "My dog is a golden retriever named Max, he is three years old."
    for order in ("surprisal", "content_first"):  # the store's setting does not override the weights'
        with ams.Memory.open(tmp_path / f"{order}.db", backbone=tiny_backbone_dir, weights=tmp_path / "cf.safetensors",
                             config=MemoryConfig(prefix=PrefixConfig(salient_order=order))) as mem:
            mem.write(text)
            assert mem._salient([0])["token_ids"].tolist() == mem.backbone.salient_ids([text], 8, order="content_first")[0]
    with pytest.raises(InvalidInput, match="unknown order"):
        ams.Memory.open(tmp_path / "bad.db", backbone=tiny_backbone_dir, weights=tmp_path / "bad.safetensors")


def test_a_store_opens_with_weights_and_remembers_them(tiny_backbone_dir, other_backbone_dir, tmp_path):
    weights = tmp_path / "channel.safetensors"
    _trained_weights(tiny_backbone_dir, weights)
    db = tmp_path / "alice.db"
    with ams.Memory.open(db, backbone=tiny_backbone_dir) as mem:
        mem.write("I adopted a beagle named Waffles.")
        untrained = mem.attention.lifts.detach().clone()
        assert mem.weights is None
        g = mem.generate("What is my dog called?", max_new_tokens=4)
        assert g.mode == "text" and g.prefix_slots == 0  # no trained channel: no prefix unless asked for
    with ams.Memory.open(db, backbone=tiny_backbone_dir, weights=weights) as mem:
        torch.testing.assert_close(mem.attention.lifts, -untrained, rtol=1e-3, atol=1e-4)  # stored in fp16
        assert mem.weights == str(weights.resolve())
        assert mem.generate("What is my dog called?", max_new_tokens=4).mode == "hybrid"  # with one: text and prefix
        g = mem.generate("What is my dog called?", mode="prefix", max_new_tokens=4)
        assert mem.config.prefix.salient_tokens == 0  # the store's own setting; the weights bring 8
        salient = mem.backbone.salient_ids(["I adopted a beagle named Waffles."], 8)[0]
        assert g.prefix_slots == len(salient) + mem.config.prefix.slots
    with ams.Memory.open(db, backbone=tiny_backbone_dir) as mem:  # remembered
        torch.testing.assert_close(mem.attention.lifts, -untrained, rtol=1e-3, atol=1e-4)
    # weights of another backbone, and a file that is not weights: typed errors, store unchanged
    other = tmp_path / "other.safetensors"
    with ams.Memory.open(":memory:", backbone=other_backbone_dir) as mem:
        save_channel(mem.attention, mem.backbone, other)
    with pytest.raises(StoreMismatch, match="trained for backbone"):
        ams.Memory.open(db, backbone=tiny_backbone_dir, weights=other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInput):
        ams.Memory.open(db, backbone=tiny_backbone_dir, weights=junk)
    with pytest.raises(InvalidInput):
        ams.Memory.open(db, backbone=tiny_backbone_dir, weights=tmp_path / "missing.safetensors")
    with ams.Memory.open(db, backbone=tiny_backbone_dir) as mem:
        assert mem.weights == str(weights.resolve()) and len(mem) == 1
    # the recorded file changes, then goes: the store says so instead of answering with other weights
    moved = tmp_path / "kept.safetensors"
    shutil.copy(weights, moved)
    _trained_weights(tiny_backbone_dir, weights)
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        with torch.no_grad():
            mem.attention.scale.mul_(2.0)
        save_channel(mem.attention, mem.backbone, weights)
    with pytest.raises(StoreMismatch, match="changed"):
        ams.Memory.open(db, backbone=tiny_backbone_dir)
    weights.unlink()
    with pytest.raises(StoreMismatch, match="cannot be read"):
        ams.Memory.open(db, backbone=tiny_backbone_dir)
    with ams.Memory.open(db, backbone=tiny_backbone_dir, weights=moved) as mem:  # choosing again works
        assert mem.weights == str(moved.resolve())


def test_a_store_without_weights_uses_the_shipped_channel_and_remembers_the_choice(
        tiny_backbone_dir, other_backbone_dir, tmp_path, monkeypatch):
    shipped = tmp_path / "package" / "channel.safetensors"
    shipped.parent.mkdir()
    _trained_weights(tiny_backbone_dir, shipped)
    monkeypatch.setattr(ams.memory, "shipped_channel", lambda name: shipped)  # as the package ships one
    db = tmp_path / "alice.db"
    with ams.Memory.open(db, backbone=tiny_backbone_dir) as mem:
        trained = mem.attention.lifts.detach().clone()
        assert mem.weights == str(shipped.resolve()) and mem.default_mode == "hybrid"
        mem.write("I adopted a beagle named Waffles.")
    with ams.Memory.open(db, backbone=tiny_backbone_dir, weights="untrained") as mem:
        assert mem.weights is None and mem.default_mode == "text"
        assert not torch.allclose(mem.attention.lifts, trained)
    with ams.Memory.open(db, backbone=tiny_backbone_dir) as mem:  # the choice is remembered
        assert mem.weights is None
    with ams.Memory.open(db, backbone=tiny_backbone_dir, weights="shipped") as mem:
        torch.testing.assert_close(mem.attention.lifts, trained)
    # an upgraded package ships other weights: a store that uses the shipped channel follows it
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir, weights="untrained") as mem:
        with torch.no_grad():
            mem.attention.scale.mul_(3.0)
        save_channel(mem.attention, mem.backbone, shipped)
        upgraded = mem.attention.scale.detach().clone()
    with ams.Memory.open(db, backbone=tiny_backbone_dir) as mem:
        torch.testing.assert_close(mem.attention.scale, upgraded, rtol=1e-3, atol=1e-4)
        assert len(mem) == 1
    # a store of dialogue turns keeps answering in text mode: the channel was trained on facts
    with ams.Memory.open(tmp_path / "chat.db", backbone=tiny_backbone_dir) as mem:
        assert mem.default_mode == "hybrid"
        mem.write("we finally got a puppy", speaker="Ana")
        assert mem.weights is not None and mem.default_mode == "text"
        assert mem.generate("What did Ana get?", max_new_tokens=3).mode == "text"
    # a shipped file trained for another backbone (or revision) is not used: the untrained channel
    with ams.Memory.open(":memory:", backbone=other_backbone_dir) as mem:
        save_channel(mem.attention, mem.backbone, shipped)
    with ams.Memory.open(tmp_path / "bob.db", backbone=tiny_backbone_dir) as mem:
        assert mem.weights is None and mem.default_mode == "text"
    with pytest.raises(InvalidInput, match="no trained channel ships"):  # asked for by name: said so
        ams.Memory.open(tmp_path / "bob.db", backbone=tiny_backbone_dir, weights="shipped")


def test_the_train_command(tiny_backbone_dir, tmp_path, capsys):
    from ams.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--backbone", tiny_backbone_dir, "--episodes", "1", "--val-episodes", "1",
                 "--facts", "10", "--queries", "4", "--steps", "2", "--batch-size", "2", "--eval-every", "1",
                 "--eval-answers", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "prefix: held-out NLL" in printed and "hybrid: held-out NLL" in printed and "text: hit-rate" in printed
    with ams.Memory.open(tmp_path / "s.db", backbone=tiny_backbone_dir, weights=out / "channel.safetensors") as mem:
        assert mem.weights == str((out / "channel.safetensors").resolve())
    with safe_open(out / "channel.safetensors", "pt") as f:  # written in fp16
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert main(["train", "--out", str(out), "--backbone", tiny_backbone_dir, "--modes", "text", "--quiet"]) == 2


def test_salient_ids_are_whole_words_in_text_order(tiny_backbone_dir):
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        bb = mem.backbone
        text = "My sister-in-law adopted a beagle named Waffles, in Zürich!"
        ids = bb.tokenize(text)
        pieces = [bb.tokenizer.decode([t]) for t in ids]
        alnum = [any(c.isalnum() for c in p) for p in pieces]
        # everything fits: every token of a word, no punctuation
        assert bb.salient_ids([text], 64)[0] == [t for t, a in zip(ids, alnum) if a]
        for m in (1, 3, 6):
            got = bb.salient_ids([text], m)[0]
            assert 0 < len(got) <= m
            positions, at = [], 0
            for t in got:  # a subsequence of the text's tokens
                at = ids.index(t, at)
                positions.append(at)
                at += 1
            chosen = set(positions)
            for i in positions:  # a token inside a word comes with the token before it
                inside = i > 0 and alnum[i] and alnum[i - 1] and not pieces[i][:1].isspace()
                assert not inside or i - 1 in chosen
        assert bb.salient_ids(["", "ok"], 4)[0] == []


def test_salient_words_are_content_words_before_function_words(tiny_backbone_dir):
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        bb = mem.backbone
        text = "My dog is a golden retriever named Max, he is three years old."
        content = ["dog", "golden", "retriever", "named", "Max", "three", "years", "old"]  # each after a space
        room = sum(len(bb.tokenize(" " + w)) for w in content)
        got = bb.salient_ids([text], room, order="content_first")[0]
        assert bb.decode(got).split() == content  # whatever the (random) model finds surprising
        more = bb.decode(bb.salient_ids([text], room + 1, order="content_first")[0]).split()
        assert len(more) == len(content) + 1 and set(content) < set(more)  # then one function word of one token
        everything = bb.salient_ids([text], 64, order="surprisal")[0]
        assert bb.salient_ids([text], 64, order="content_first")[0] == everything
        with pytest.raises(InvalidInput, match="order"):
            bb.salient_ids([text], 8, order="content")


def test_salient_ids_of_a_padded_batch_equal_those_read_one_at_a_time(tiny_backbone_dir):
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir) as mem:
        bb = mem.backbone
        texts = ["I adopted a beagle named Waffles.", "", "Ana moved to Lisbon in March after the long winter.",
                 "ok", "My favourite band is Khruangbin, and my sister's is the Beatles."]
        batched = bb.salient_ids(texts, 5)
        assert batched == [bb.salient_ids([t], 5, batch_size=1)[0] for t in texts]
        assert batched == bb.salient_ids(texts, 5, batch_size=2)  # the longest text in a batch of its own
        assert batched[1] == [] and all(batched[i] for i in (0, 2, 3, 4))


def test_examples_round_trip_through_safetensors(data, tmp_path):
    from ams.train import load_examples, save_examples

    train, _ = data
    save_examples(train, tmp_path / "ex.safetensors")
    back = load_examples(tmp_path / "ex.safetensors")
    assert len(back) == len(train)
    for a, b in zip(train, back):
        assert (a.query, a.prompts, a.answer, a.gold, a.keywords, a.forbidden) == \
               (b.query, b.prompts, b.answer, b.gold, b.keywords, b.forbidden)
        for key, v in a.inputs.items():
            for k, t in (v.items() if isinstance(v, dict) else [("", v)]):
                assert torch.equal(t, b.inputs[key][k] if k else b.inputs[key])
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InvalidInput):
        load_examples(tmp_path / "bad.safetensors")


def test_equal_weights_make_equal_files(tiny_backbone_dir, tmp_path):
    """The sha256 of a channel file depends on its contents only: a run that remakes the weights
    remakes the file (safetensors alone writes its metadata in an order that changes by process)."""
    with ams.Memory.open(":memory:", backbone=tiny_backbone_dir, weights="untrained") as mem:
        recipe = {"steps": 400, "seed": 0, "modes": ["prefix"], "note": "café"}
        for name in ("a", "b"):
            save_channel(mem.attention, mem.backbone, tmp_path / f"{name}.safetensors", salient_tokens=8, recipe=recipe)
        data = (tmp_path / "a.safetensors").read_bytes()
        assert data == (tmp_path / "b.safetensors").read_bytes()
        n = int.from_bytes(data[:8], "little")
        assert n % 8 == 0
        orders: list[list[str]] = []  # the keys of every object of the header, as written
        json.loads(data[8 : 8 + n], object_pairs_hook=lambda pairs: orders.append([k for k, _ in pairs]))
        assert len(orders) > 2 and all(keys == sorted(keys) for keys in orders)
        meta = load_channel(data, mem.attention, mem.backbone.identity)
        assert json.loads(meta["recipe"]) == recipe and meta["salient_tokens"] == "8"



def test_a_run_can_train_with_the_attended_memorys_words_only(tiny_backbone_dir, tmp_path):
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, salient_memories=1, train_episodes=1, val_episodes=1,
                             facts=(10,), queries=4, steps=2, batch_size=4, eval_every=2, eval_answers=2,
                             max_new_tokens=2, warmup=1, prefix_target="entity")
    train_channel(cfg, out_dir=tmp_path / "run", progress=False)
    assert examples_settings(tmp_path / "run" / "examples-train.safetensors") == {
        "salient_tokens": 12, "holder_weight": 0.0, "salient_order": "surprisal"}  # the default recipe's
    weights = tmp_path / "run" / "channel.safetensors"
    with safe_open(str(weights), "pt") as f:
        assert json.loads(f.metadata()["recipe"])["salient_memories"] == 1
    # answering, the store's setting decides, whatever the recipe trained with
    for n in (0, 2):
        with ams.Memory.open(tmp_path / f"{n}.db", backbone=tiny_backbone_dir, weights=weights,
                             config=MemoryConfig(prefix=PrefixConfig(salient_memories=n))) as mem:
            assert mem.config.prefix.salient_memories == n  # what `_prefix` reads: the weights do not override it
    # the same directory with another number of salient tokens: its cached examples do not fit, and the run says so
    with pytest.raises(InvalidInput, match="was built with"):
        train_channel(dataclasses.replace(cfg, salient_tokens=4), out_dir=tmp_path / "run", progress=False)
    with pytest.raises(InvalidInput, match="was built with"):  # retrieved another way: they do not fit either
        train_channel(dataclasses.replace(cfg, holder_weight=0.3), out_dir=tmp_path / "run", progress=False)
    with pytest.raises(InvalidInput, match="was built with"):  # their words ranked another way
        train_channel(dataclasses.replace(cfg, salient_order="content_first"), out_dir=tmp_path / "run", progress=False)
    with pytest.raises(InvalidInput, match="holder_weight"):
        dataclasses.replace(cfg, holder_weight=-0.1)
    with pytest.raises(InvalidInput, match="salient_order"):
        dataclasses.replace(cfg, salient_order="random")
    # files from before a setting was kept were built with its first value: they fit that, not another
    for p in (tmp_path / "run").glob("examples-*.safetensors"):
        examples = load_examples(p)
        save_examples(examples, p, {"salient_tokens": cfg.salient_tokens})
    with pytest.raises(InvalidInput, match="was built with"):
        train_channel(dataclasses.replace(cfg, salient_order="content_first"), out_dir=tmp_path / "run", progress=False)
    train_channel(dataclasses.replace(cfg, steps=3, eval_every=3), out_dir=tmp_path / "run", progress=False)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInput, match="not a file of channel training examples"):
        examples_settings(junk)


def test_examples_that_do_not_say_whose_words_they_hold_cannot_train_a_choice_of_them(data, tiny_backbone_dir,
                                                                                     tmp_path):
    bare = [dataclasses.replace(ex, inputs={k: v for k, v in ex.inputs.items() if k != "token_memory"})
            for ex in data[0]]
    cfg = ChannelTrainConfig(backbone=tiny_backbone_dir, salient_memories=1, steps=1, batch_size=4, eval_every=1,
                             eval_answers=2, max_new_tokens=2, warmup=1, prefix_target="entity")
    with pytest.raises(InvalidInput, match="built before"):
        train_channel(cfg, out_dir=tmp_path / "bare", progress=False, data=(bare, data[1]))
