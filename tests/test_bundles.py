import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from ams.attention import CrossBundleAttention
from ams.bundles import BUNDLES, BundleTriple, TemporalBundle, context_point, phases_from_time
from ams.config import TemporalConfig


def test_atoms_span_a_minute_to_ten_years():
    b = TemporalBundle(TemporalConfig())
    periods = 2 * math.pi / b.omegas
    assert periods.max() == pytest.approx(10 * 365.25 * 86400) and periods.min() == pytest.approx(60.0)
    assert b.d_base == 2 * len(b.omegas) and b.d_fiber == b.d_base + 2


def test_phases_keep_fp64_precision_at_todays_unix_times():
    """fp32 time loses whole radians at 1.8e9 s for a per-minute atom; the fp64 path must not."""
    t = 1_800_000_123.25
    omega = 2 * math.pi / 60.0
    exact = float((Fraction(t) * Fraction(omega)) % Fraction(2 * math.pi))  # exact product of the fp64s
    got = phases_from_time(np.array([t]), np.array([omega]))[0] * math.sqrt(1)
    assert float(got[0]) == pytest.approx(math.cos(exact), abs=1e-5)
    assert float(got[1]) == pytest.approx(math.sin(exact), abs=1e-5)
    fp32 = np.float32(t) * np.float32(omega)
    assert abs(math.cos(float(fp32)) - math.cos(exact)) > 1e-3  # what the fp64 reduction prevents


def test_temporal_kernel_is_one_now_and_falls_with_age():
    b = TemporalBundle(TemporalConfig())
    now = 1_767_225_600.0
    ts = np.array([now, now - 3600, now - 86400 * 30, now - 86400 * 365 * 3])
    tri = b.encode(ts, now=now, access_count=np.zeros(4))
    sims = (tri.dirn @ b.query(now)).numpy()
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[0] > sims[1] > sims[3]
    recency = tri.fiber[:, -2].numpy()
    assert recency[0] == pytest.approx(1.0) and recency[2] == pytest.approx(0.5, abs=1e-3)


def test_triples_check_their_shapes():
    with pytest.raises(ValueError):
        BundleTriple(base=torch.ones(3, 4), fiber=torch.ones(2, 5), dirn=torch.ones(3, 4) / 2)
    with pytest.raises(ValueError, match="unit"):
        BundleTriple(base=torch.ones(3, 4), fiber=torch.ones(3, 5), dirn=torch.ones(3, 4))


def test_context_point_mixes_own_previous_and_summary():
    own, prev = torch.eye(4)[:1], torch.eye(4)[1:2]
    p = context_point(own, prev, torch.zeros(1, 4))
    assert torch.allclose(p, torch.tensor([[1.0, 1.0, 0, 0]]) / math.sqrt(2))
    assert torch.allclose(context_point(own, torch.zeros(1, 4), torch.zeros(1, 4)), own)


@pytest.mark.parametrize("B,K,L,d", [(1, 3, 4, 32), (2, 5, 1, 24), (3, 1, 7, 16)])
def test_attention_prefix_shape_norm_and_mask(B, K, L, d):
    base = {"temporal": 6, "topic": 10, "context": 10}
    fiber = {"temporal": 8, "topic": d, "context": d}
    att = CrossBundleAttention(d, base, fiber, slots=L, temperature=0.1, token_norm=3.0)
    g = torch.Generator().manual_seed(0)
    q = {b: torch.nn.functional.normalize(torch.randn(B, base[b], generator=g), dim=-1) for b in BUNDLES}
    dirn = {b: torch.nn.functional.normalize(torch.randn(B, K, base[b], generator=g), dim=-1) for b in BUNDLES}
    fib = {b: torch.randn(B, K, fiber[b], generator=g) for b in BUNDLES}
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[:, K - 1 :] = K == 1  # the last memory is absent unless it is the only one
    prefix, w = att(q, torch.randn(B, d, generator=g), dirn, fib, mask)
    assert prefix.shape == (B, L, d)
    assert torch.allclose(prefix.norm(dim=-1), torch.full((B, L), 3.0), rtol=1e-3)
    if K > 1:
        assert torch.all(w["topic"][:, -1] == 0)
    assert torch.allclose(w["topic"].sum(-1), torch.ones(B))
    state = att.to_bytes()
    other = CrossBundleAttention(d, base, fiber, slots=L, temperature=0.1, token_norm=1.0, seed=5)
    other.load_bytes(state)
    assert torch.equal(other(q, torch.zeros(B, d), dirn, fib, mask)[0], att(q, torch.zeros(B, d), dirn, fib, mask)[0])


def test_attention_weights_follow_the_topic_query_at_init():
    d = 8
    att = CrossBundleAttention(d, {"temporal": 4, "topic": 4, "context": 4}, {"temporal": 6, "topic": d, "context": d},
                               slots=2, temperature=0.01, token_norm=1.0)
    dirn = {b: torch.eye(4)[None, :3] for b in BUNDLES}  # memories along e0, e1, e2
    q = {b: torch.eye(4)[None, 1] for b in BUNDLES}
    fib = {"temporal": torch.zeros(1, 3, 6), "topic": torch.eye(d)[None, :3] * 5, "context": torch.zeros(1, 3, d)}
    _, w = att(q, torch.zeros(1, d), dirn, fib)
    assert w["topic"][0].argmax() == 1 and w["topic"][0, 1] > 0.99


def test_salient_token_slots_come_first_and_start_as_the_embeddings():
    d, B, S = 16, 2, 5
    att = CrossBundleAttention(d, {"temporal": 4, "topic": 4, "context": 4}, {"temporal": 6, "topic": d, "context": d},
                               slots=3, temperature=0.1, token_norm=1.0)
    g = torch.Generator().manual_seed(1)
    q = {b: torch.randn(B, 4, generator=g) for b in BUNDLES}
    dirn = {b: torch.randn(B, 2, 4, generator=g) for b in BUNDLES}
    fib = {"temporal": torch.randn(B, 2, 6, generator=g), "topic": torch.randn(B, 2, d, generator=g),
           "context": torch.randn(B, 2, d, generator=g)}
    tokens = torch.randn(B, S, d, generator=g)
    with torch.no_grad():
        prefix, _ = att(q, torch.zeros(B, d), dirn, fib, tokens=tokens)
        pooled, _ = att(q, torch.zeros(B, d), dirn, fib)
    assert prefix.shape == (B, S + 3, d)
    torch.testing.assert_close(prefix[:, :S], tokens)
    torch.testing.assert_close(prefix[:, S:], pooled)


def test_the_prefix_can_keep_the_salient_words_of_the_most_attended_memories_only():
    d = 8
    att = CrossBundleAttention(d, {"temporal": 4, "topic": 4, "context": 4}, {"temporal": 6, "topic": d, "context": d},
                               slots=2, temperature=0.01, token_norm=1.0)
    dirn = {b: torch.eye(4)[None, :3].repeat(2, 1, 1) for b in BUNDLES}  # memories along e0, e1, e2
    order = torch.tensor([[0.5, 0.0, 1.0, 0.0], [1.0, 0.5, 0.0, 0.0]])  # question 0: memories 2, 0, 1; question 1: 0, 1, 2
    q = {b: order for b in BUNDLES}
    fib = {"temporal": torch.zeros(2, 3, 6), "topic": torch.zeros(2, 3, d), "context": torch.zeros(2, 3, d)}
    owner = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, 2, -1]])
    _, w = att(q, torch.zeros(2, d), dirn, fib, tokens=torch.zeros(2, 5, d))
    a = att.relevance(w)
    assert att.kept_tokens(a, owner, 0).all()  # 0: every memory's words
    assert att.top_memories(a, 1).tolist() == [[2], [0]]
    assert att.kept_tokens(a, owner, 1).tolist() == [[False, False, False, True, True], [True, False, False, False, False]]
    assert att.top_memories(a, 2).tolist() == [[0, 2], [0, 1]]  # in retrieval order
    assert att.kept_tokens(a, owner, 2).tolist() == [[True, True, False, True, True], [True, True, True, False, False]]
    assert att.top_memories(a, 5).tolist() == [[0, 1, 2], [0, 1, 2]]  # no more than were retrieved
