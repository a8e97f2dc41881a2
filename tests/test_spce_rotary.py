"""The Triton SPCE rotary kernel against its PyTorch reference (TRITON_INTERPRET=1 on CPU)."""

import math

import pytest
import torch
from ams.kernels.spce_rotary import HAS_TRITON, phases_from_time, spce_rotary, spce_rotary_ref

kernel = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

SHAPES = [  # B, T, H, Hk, D, S
    (1, 1, 1, 1, 2, 1),
    (2, 7, 6, 2, 12, 2),  # GQA, non-power-of-two pairs, two streams
    (3, 33, 9, 3, 64, 1),  # SmolLM2's heads
    (1, 5, 4, 4, 10, 3),
]


def inputs(B, T, H, Hk, D, S, dtype, seed=0, seconds=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=g).to(dtype)
    k = torch.randn(B, T, Hk, D, generator=g).to(dtype)
    # unix seconds around 2026: fp32 cannot even represent these times to the second
    time = (1.79e9 + torch.rand(B, T, generator=g, dtype=torch.float64) * 1e5) if seconds else \
        torch.arange(T, dtype=torch.float64).expand(B, T)
    omega = torch.rand(S, Hk, D // 2, generator=g) * 3.0
    phi = torch.randn(S, Hk, D // 2, generator=g)
    stream = torch.randint(0, S, (B, T), generator=g)
    return q, k, time, omega, phi, stream


def eager_low_precision(q, k, time, omega, phi, stream):
    """What plain PyTorch computes in q's dtype: cos/sin cast down, products in the low dtype."""
    theta = phases_from_time(time, omega, phi, stream)
    G = q.shape[2] // k.shape[2]
    out = []
    for x, th in ((q, theta.repeat_interleave(G, dim=2)), (k, theta)):
        c, s = th.cos().to(x.dtype), th.sin().to(x.dtype)
        P = x.shape[-1] // 2
        x1, x2 = x[..., :P], x[..., P:]
        out.append(torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1))
    return out


@kernel
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernel_matches_reference(shape, dtype):
    q, k, time, omega, phi, stream = inputs(*shape, dtype)
    got = spce_rotary(q, k, time, omega, phi, stream=stream, use_kernel=True)
    want = spce_rotary_ref(q.float(), k.float(), time, omega, phi, stream=stream)  # the fp32 specification
    assert got[0].dtype == dtype and got[0].shape == q.shape and got[1].shape == k.shape
    if dtype == torch.float32:
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-6)
        return
    base = eager_low_precision(q, k, time, omega, phi, stream)
    for a, b, e in zip(got, want, base):
        err, err_eager = (a.float() - b).abs().max(), (e.float() - b).abs().max()
        assert err <= 2 * err_eager + 1e-6, (err, err_eager)


@kernel
@pytest.mark.parametrize("shape", SHAPES[1:])
def test_kernel_gradients_match_reference(shape):
    q, k, time, omega, phi, stream = inputs(*shape, torch.float32, seed=1)
    B, T, Hk, P = q.shape[0], q.shape[1], k.shape[2], q.shape[3] // 2
    phase = torch.randn(B, T, Hk, P)
    leaves = [t.clone().requires_grad_() for t in (q, k, omega, phi, phase)]
    gq, gk = torch.randn_like(q), torch.randn_like(k)

    def grads(use_kernel):
        xs = [t.detach().clone().requires_grad_() for t in leaves]
        fn = spce_rotary if use_kernel else spce_rotary_ref
        kw = {"use_kernel": True} if use_kernel else {}
        qo, ko = fn(xs[0], xs[1], time, xs[2], xs[3], stream=stream, phase=xs[4], **kw)
        return torch.autograd.grad((qo * gq).sum() + (ko * gk).sum(), xs)

    for name, a, b in zip(["q", "k", "omega", "phi", "phase"], grads(True), grads(False)):
        # d/d omega sums dtheta * time with time ~ 1.8e9: compare relative to its size
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item() + 1e-5, rtol=1e-4, msg=name)


@kernel
def test_kernel_without_parameter_gradients_and_empty_batch():
    q, k, time, omega, phi, stream = inputs(2, 4, 2, 1, 8, 1, torch.float32)
    q.requires_grad_()
    qo, _ = spce_rotary(q, k, time, omega, phi, use_kernel=True)
    (dq,) = torch.autograd.grad(qo.sum(), q)
    (want,) = torch.autograd.grad(spce_rotary_ref(q, k, time, omega, phi)[0].sum(), q)
    torch.testing.assert_close(dq, want)
    empty = spce_rotary(q[:, :0], k[:, :0], time[:, :0], omega, phi, use_kernel=True)
    assert empty[0].shape == (2, 0, 2, 8)


def test_rotation_keeps_norms_and_scores_depend_on_time_differences_only():
    q, k, _, omega, phi, _ = inputs(1, 1, 2, 2, 16, 1, torch.float64)
    q, k = q.float(), k.float()
    scores = []
    for t0 in (0.0, 12345.0, 1.79e9):  # the same gap of 7 units, at three absolute times
        tq, tk = torch.tensor([[t0 + 7]], dtype=torch.float64), torch.tensor([[t0]], dtype=torch.float64)
        qr, _ = spce_rotary_ref(q, k, tq, omega, phi)
        _, kr = spce_rotary_ref(q, k, tk, omega, phi)
        torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))
        scores.append((qr * kr).sum(-1))
    # fp64 time keeps the score at 1.79e9 s; fp32 time there would be off by up to 128 s
    torch.testing.assert_close(scores[1], scores[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[2], scores[0], atol=1e-4, rtol=1e-4)


def test_token_time_with_rope_frequencies_is_rope():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    T, H, D, theta = 40, 3, 16, 10000.0
    q, k = torch.randn(1, T, H, D), torch.randn(1, T, H, D)
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2).float() / D))
    pos = torch.arange(T).float()
    emb = torch.cat([pos[:, None] * inv_freq] * 2, -1)
    want = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), emb.cos()[None], emb.sin()[None])
    got = spce_rotary_ref(q, k, torch.arange(T), inv_freq.expand(1, H, -1), torch.zeros(1, H, D // 2))
    torch.testing.assert_close(got[0].transpose(1, 2), want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1].transpose(1, 2), want[1], atol=1e-5, rtol=1e-5)


def test_phases_are_reduced_in_fp64():
    omega = torch.full((1, 1, 1), 2.9)
    t = torch.tensor([[1.79e9, 1.79e9 + 1]], dtype=torch.float64)
    theta = phases_from_time(t, omega, torch.zeros(1, 1, 1))[0, :, 0, 0]
    w = omega.item()  # the fp32 frequency, as a Python float (a double)
    want = torch.tensor([math.remainder(w * x, 2 * math.pi) for x in t[0].tolist()])
    assert theta.abs().max() <= math.pi
    torch.testing.assert_close(theta, want, atol=1e-5, rtol=0)
    # the same angles from fp32 time are wrong by radians
    coarse = (omega.item() * t.float().double()[0]).remainder(2 * math.pi)
    assert ((coarse - want.double()).remainder(2 * math.pi) - math.pi).abs().min() < math.pi - 0.1


def test_bad_shapes_raise():
    q, k, time, omega, phi, _ = inputs(1, 3, 3, 2, 8, 1, torch.float32)
    with pytest.raises(ValueError, match="multiple of Hk"):
        spce_rotary_ref(q, k, time, omega, phi)
