"""The SPCE training loop: it learns, validates, plots, and resumes from a checkpoint exactly."""

import json

import pytest
import torch

from ams.backbone.spce import SpceConfig, SpceForCausalLM
from ams.backbone.spce.train import (
    LMTrainConfig,
    evaluate,
    plot_curves,
    sample_batch,
    token_stream,
    train_lm,
    validation_batches,
)


def tiny(seed=0):
    torch.manual_seed(seed)
    return SpceForCausalLM(SpceConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, sliding_window=8, carry_size=4,
                                      rope_theta=100.0))


@pytest.fixture(scope="module")
def streams():
    # a language with a long-range rule: each line repeats the symbol that opened its document
    g = torch.Generator().manual_seed(0)
    docs = []
    for _ in range(60):
        key = chr(ord("a") + int(torch.randint(0, 5, (1,), generator=g)))
        docs.append(key + "".join(key + "xyz"[int(torch.randint(0, 3, (1,), generator=g))] for _ in range(20)))
    encode = lambda s: [ord(c) - ord("a") + 3 for c in s]  # noqa: E731
    return token_stream(docs[:50], encode, sep=1), token_stream(docs[50:], encode, sep=1)


def test_training_lowers_held_out_loss_and_plots(streams, tmp_path):
    train, val = streams
    cfg = LMTrainConfig(steps=30, batch_size=4, seq_len=32, lr=1e-2, warmup=3, eval_every=10, eval_batches=2)
    model = tiny()
    before = evaluate(model, validation_batches(val, 4, 32, 2))
    hist = train_lm(model, train, val, cfg, progress=False, val_skip=8)
    losses = [v[1] for v in hist["val"]]
    assert len(hist["val"]) == 3 and losses[-1] < losses[0] < before - 1.0  # ln(40) = 3.7 at the start
    plot_curves({"tiny": hist}, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_a_resumed_run_matches_an_uninterrupted_one(streams, tmp_path):
    train, val = streams
    cfg = LMTrainConfig(steps=12, batch_size=2, seq_len=24, lr=5e-3, warmup=2, eval_every=6, eval_batches=1,
                        checkpoint_every=6)
    whole = train_lm(tiny(), train, val, cfg, out_dir=tmp_path / "a", progress=False)
    train_lm(tiny(), train, val, cfg, out_dir=tmp_path / "b", progress=False, stop_at=6)  # as if killed at 6
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    resumed = train_lm(tiny(seed=99), train, val, cfg, out_dir=tmp_path / "b", progress=False)  # weights come from disk
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    assert not list((tmp_path / "b").glob("**/*.pt")) and not list((tmp_path / "b").glob("**/*.bin"))


def test_batches_are_seeded_by_step_and_short_streams_raise():
    tokens = torch.arange(100)
    assert torch.equal(sample_batch(tokens, 3, 10, seed=1, step=5), sample_batch(tokens, 3, 10, seed=1, step=5))
    assert not torch.equal(sample_batch(tokens, 3, 10, seed=1, step=5), sample_batch(tokens, 3, 10, seed=1, step=6))
    with pytest.raises(ValueError, match="cannot give crops"):
        sample_batch(tokens[:5], 1, 10, seed=0, step=0)
