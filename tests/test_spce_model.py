"""The SPCE causal LM: exact conversion from Llama, streaming equal to the full pass, keyframes, HF plumbing."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from ams.backbone.spce import SpceCache, SpceConfig, SpceForCausalLM


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                      rope_theta=10000.0, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def windowed(llama, *, w=16, carry=8, seed=1, **kw):
    """A converted model with a small window and a live carry (random gates), as training would leave it."""
    model = SpceForCausalLM.from_llama(llama, sliding_window=w, carry_size=carry, **kw).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.carry.gate.copy_(torch.randn(layer.carry.gate.shape, generator=g) * 0.5)
            layer.carry.proj_in.weight.copy_(torch.randn(layer.carry.proj_in.weight.shape, generator=g))
    return model


def ids(B, T, seed=0):
    return torch.randint(3, 101, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_converted_llama_gives_the_same_logits(llama):
    model = SpceForCausalLM.from_llama(llama).eval()
    x = ids(2, 120)
    torch.testing.assert_close(model(x).logits, llama(x).logits, atol=1e-4, rtol=0)
    # hidden states too (memories are encoded from the last one), entry by entry
    ours, theirs = model(x, output_hidden_states=True).hidden_states, llama(x, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # left padding: positions follow the mask, as generate() sets them
    mask = torch.ones(2, 120, dtype=torch.long)
    mask[1, :9] = 0
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    got = model(x, attention_mask=mask, position_ids=pos).logits
    want = llama(x, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)


@torch.no_grad()
def test_converted_llama_generates_the_same_tokens(llama):
    model = SpceForCausalLM.from_llama(llama).eval()
    x = ids(2, 12, seed=3)
    mask = torch.ones_like(x)
    mask[0, :4] = 0
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(x, **kw), llama.generate(x, **kw))
    emb = llama.get_input_embeddings()(x)
    assert torch.equal(model.generate(inputs_embeds=emb, **kw), llama.generate(inputs_embeds=emb, **kw))
    beams = dict(kw, num_beams=3, max_new_tokens=6)  # beam search reorders the cache's rows
    assert torch.equal(model.generate(x, **beams), llama.generate(x, **beams))


@torch.no_grad()
def test_the_window_limits_what_a_token_sees(llama):
    model = SpceForCausalLM.from_llama(llama, sliding_window=8).eval()
    a, b = ids(1, 40, seed=4), ids(1, 40, seed=4)
    b[0, :20] = ids(1, 20, seed=5)  # change tokens 0..19
    la, lb = model(a).logits, model(b).logits
    # two layers of 8-slot windows reach 2 * 7 slots back: token 34 on cannot see the change
    torch.testing.assert_close(la[0, 34:], lb[0, 34:])
    assert (la[0, 33] - lb[0, 33]).abs().max() > 1e-4


@torch.no_grad()
@pytest.mark.parametrize("step", [1, 5, 16, 23])
def test_streaming_equals_the_full_pass(llama, step):
    """Ring buffer + carry, fed `step` tokens at a time over 8 windows, against the vectorised pass."""
    model = windowed(llama, n_streams=2, stream_time_steps=[1.0, 60.0])
    T = 128
    x = ids(2, T, seed=6)
    # second-resolution timestamps from a day in 2026 and two streams: time reaches carry and phases
    times = 1.79e9 + torch.cumsum(torch.rand(2, T, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 90, 1)
    streams = (torch.arange(T) % 3 == 0).long().expand(2, T)
    full = model(x, times=times, streams=streams).logits
    cache, outs = SpceCache(model.config, 2), []
    for a in range(0, T, step):
        s = slice(a, a + step)
        outs.append(model(x[:, s], times=times[:, s], streams=streams[:, s], past_key_values=cache,
                          use_cache=True).logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    # and the carry is live: without it the logits differ
    plain = SpceForCausalLM.from_llama(llama, sliding_window=16, n_streams=2, stream_time_steps=[1.0, 60.0])
    assert (plain(x, times=times, streams=streams).logits - full).abs().max() > 1e-3
    with pytest.raises(ValueError, match="streams"):
        model(x, streams=streams + 1)


@torch.no_grad()
def test_streaming_memory_is_constant_and_keyframes_rewind(llama):
    model = windowed(llama, keyframe_every=2, max_keyframes=2)
    x = ids(1, 16 * 12, seed=7)
    cache = SpceCache(model.config, 1)
    sizes, logits = [], {}
    for a in range(0, x.shape[1], 16):
        logits[a] = model(x[:, a:a + 16], past_key_values=cache, use_cache=True).logits
        sizes.append(cache.nbytes())
    assert len(set(sizes[4:])) == 1  # once the keyframe budget is full, the state stops growing
    assert list(cache.keyframes) == [10, 12]
    cache.rewind(10)
    assert cache.seen == 160 and list(cache.keyframes) == [10]
    again = model(x[:, 160:176], past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(again, logits[160])
    with pytest.raises(KeyError, match="no keyframe at window 4"):
        cache.rewind(4)


@torch.no_grad()
def test_a_stream_continues_under_either_cache_argument_name(llama):
    """transformers 5.24 hands generate()'s cache to forward as `cache`; earlier versions as `past_key_values`."""
    model = windowed(llama)
    x = ids(1, 40, seed=3)
    by_old, by_new = SpceCache(model.config, 1), SpceCache(model.config, 1)
    model(x[:, :24], past_key_values=by_old, use_cache=True)
    model(x[:, :24], cache=by_new, use_cache=True)
    full = model(x).logits[:, 24:]
    torch.testing.assert_close(model(x[:, 24:], cache=by_new, use_cache=True).logits, full, atol=1e-4, rtol=0)
    torch.testing.assert_close(model(x[:, 24:], past_key_values=by_old, use_cache=True).logits, full,
                               atol=1e-4, rtol=0)
    out = model(x[:, :8], use_cache=True)
    assert isinstance(out.past_key_values, SpceCache) and out.past_key_values.seen == 8
    with pytest.raises(ValueError, match="not both"):
        model(x[:, :8], past_key_values=SpceCache(model.config, 1), cache=SpceCache(model.config, 1))


def test_carry_decays_and_trains(llama):
    model = windowed(llama).train()
    carry = model.model.layers[0].carry
    h = torch.randn(3, 8, 2) * 100
    out = carry.step(h, torch.zeros(3, 48), torch.full((3,), 16.0))
    assert (out.norm(dim=-1) < h.norm(dim=-1)).all()  # |lambda| < 1: with no input the state shrinks
    x = ids(2, 64, seed=8)
    model(x, labels=x).loss.backward()
    assert carry.gate.grad.abs().sum() > 0 and carry.log_alpha.grad.abs().sum() > 0
    assert model.model.rotary.atoms.grad.abs().sum() > 0


def test_frequencies_are_capped_below_pi_per_step(llama):
    model = SpceForCausalLM.from_llama(llama, n_streams=2, stream_time_steps=[1.0, 0.5])
    with torch.no_grad():
        model.model.rotary.atoms.fill_(50.0)
    omega, _ = model.model.rotary(0)
    assert omega[0].max() < math.pi and omega[1].max() < math.pi / 0.5
    assert omega[1].max() > math.pi  # the finer stream may go higher in its own units


@torch.no_grad()
def test_save_and_load_through_auto_classes(llama, tmp_path):
    model = windowed(llama)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SpceForCausalLM) and loaded.config.sliding_window == 16
    x = ids(1, 50, seed=9)
    torch.testing.assert_close(loaded(x).logits, model(x).logits)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.model.rotary.atoms.dtype == torch.float32  # phases keep fp32 frequencies
    assert half.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="multiple"):
        SpceConfig(num_attention_heads=9, num_key_value_heads=2)
    with pytest.raises(ValueError, match="stream_time_steps"):
        SpceConfig(n_streams=2, stream_time_steps=[1.0])
    with pytest.raises(ValueError, match="even"):
        SpceConfig(hidden_size=30, num_attention_heads=2)
    with pytest.raises(ValueError, match="carry_decay_windows"):
        SpceConfig(carry_decay_windows=(4.0, 1.0))


def test_from_llama_rejects_other_models(llama):
    cfg = LlamaConfig(**{**llama.config.to_dict(), "rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                                        "rope_theta": 10000.0}})
    with pytest.raises(ValueError, match="default RoPE"):
        SpceForCausalLM.from_llama(LlamaForCausalLM(cfg))


@pytest.mark.integration
@torch.no_grad()
def test_converted_smollm2_gives_the_same_logits():
    from ams.backbone import load_backbone

    bb = load_backbone()
    src = bb.model
    model = SpceForCausalLM.from_llama(src).eval()
    text = "The beagle chewed my shoes again, so I bought a bigger crate and a rope toy for Waffles."
    x = torch.tensor([bb.tokenizer(text * 4)["input_ids"]])
    torch.testing.assert_close(model(x).logits, src(x).logits, atol=1e-4, rtol=0)


@pytest.mark.integration
def test_spce_backbone_answers_in_every_mode_as_its_source(tmp_path):
    import ams
    from ams.session import load_session, seed_path
    from ams.types import MODES

    session = load_session(seed_path())
    answers = {}
    for name in ("smollm2-135m-instruct", "spce:smollm2-135m-instruct"):
        # the same (untrained) channel on both: the shipped one is trained for SmolLM2's own identity
        with ams.Memory.open(tmp_path / f"{name.replace(':', '-')}.db", backbone=name, weights="untrained") as mem:
            mem.write_many([f.text for f in session.facts[:6]])
            answers[name] = {m: mem.generate(session.queries[0].text, mode=m, max_new_tokens=16).text for m in MODES}
    with pytest.raises(ams.StoreMismatch):  # an SPCE store is bound to the SPCE backbone
        ams.Memory.open(tmp_path / "spce-smollm2-135m-instruct.db")
    assert answers["spce:smollm2-135m-instruct"] == answers["smollm2-135m-instruct"]
    assert all(answers["smollm2-135m-instruct"].values())
