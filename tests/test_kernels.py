"""The Triton Kakeya encode kernel against its PyTorch reference (TRITON_INTERPRET=1 on CPU)."""

import numpy as np
import pytest
import torch
from ams.kernels import HAS_TRITON, kakeya_encode, kakeya_encode_ref

from ams.kakeya import KakeyaCodec

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def codec_arrays(d: int, S: int, m: int, seed: int):
    """A random but well-formed codec: unit t_dir, unit centres orthogonal to it."""
    g = torch.Generator().manual_seed(seed)
    t_dir = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    c = torch.randn(S, d, generator=g)
    c = torch.nn.functional.normalize(c - (c @ t_dir)[:, None] * t_dir, dim=1)
    ds = -(-d // m)
    pq = torch.randn(m, 256, ds, generator=g) * 0.3
    return torch.randn(d, generator=g) * 0.1, t_dir, c, pq


def reconstruction(x, alpha, t, seg, codes, mean, t_dir, centres, pq):
    n, d = x.shape
    m, _, ds = pq.shape
    sub = pq[torch.arange(m)[None, :], codes.long()]  # (n, m, ds)
    res = sub.transpose(1, 2).reshape(n, -1)[:, :d]
    return mean + alpha.float()[:, None] * t_dir + t.float()[:, None] * centres[seg] + res


@pytest.mark.parametrize("n,d,S,m", [(1, 24, 4, 4), (37, 100, 16, 20), (70, 384, 16, 64), (33, 576, 16, 48)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernel_matches_reference(n, d, S, m, dtype):
    torch.manual_seed(0)
    mean, t_dir, centres, pq = codec_arrays(d, S, m, seed=1)
    x = (torch.randn(n, d) * 0.5).to(dtype)
    got = kakeya_encode(x, mean, t_dir, centres, pq, use_kernel=True)
    want = kakeya_encode_ref(x.float(), mean, t_dir, centres, pq)  # the fp32 specification
    torch.testing.assert_close(got[0].float(), want[0].float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(got[1].float(), want[1].float(), atol=2e-3, rtol=2e-3)
    assert torch.equal(got[2], want[2])
    # a code may differ only where two centroids are equally near: compare what decode gives back
    assert (got[3] == want[3]).float().mean() >= 0.99
    xf = x.float()
    err = lambda out: (reconstruction(xf, *out, mean, t_dir, centres, pq) - xf).norm(dim=1)  # noqa: E731
    assert err(got).mean() <= err(want).mean() * 1.001 + 1e-6


@pytest.mark.parametrize("n,d,m", [(37, 100, 20), (70, 384, 70), (33, 576, 54)])
def test_kernel_with_no_coarse_part_is_plain_pq(n, d, m):
    """How `PQCodec` encodes: a zero axis and one zero centre leave the residual x - mean."""
    mean, _, _, pq = codec_arrays(d, 1, m, seed=3)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(4)) * 0.5
    got = kakeya_encode(x, mean, torch.zeros(d), torch.zeros(1, d), pq, use_kernel=True)
    want = kakeya_encode_ref(x, mean, torch.zeros(d), torch.zeros(1, d), pq)
    assert not got[0].any() and not got[1].any() and not got[2].any()
    assert (got[3] == want[3]).float().mean() >= 0.99
    if d % m == 0:  # the reference by brute force: each interleaved sub-vector's nearest centroid
        parts = (x - mean).view(n, d // m, m).transpose(1, 2)  # (n, m, ds)
        brute = torch.cdist(parts.transpose(0, 1), pq).argmin(-1).T  # (n, m)
        assert (want[3].long() == brute).float().mean() >= 0.99


def test_kernel_on_an_empty_batch():
    mean, t_dir, centres, pq = codec_arrays(32, 4, 8, seed=2)
    out = kakeya_encode(torch.zeros(0, 32), mean, t_dir, centres, pq, use_kernel=True)
    assert [tuple(o.shape) for o in out] == [(0,), (0,), (0,), (0, 8)]


def test_codec_with_pq_residual_round_trips_and_sizes_its_codes():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(96, 96)))[0]
    x = (rng.normal(size=(3000, 96)) / np.arange(1, 97) ** 0.5) @ basis.T + 0.2
    codec = KakeyaCodec(96, pq_bytes=24).train(x[:2500])
    codes = codec.encode(x[2500:])
    assert codes.shape == (500, codec.code_size) and codec.code_size == 30
    err = np.linalg.norm(codec.decode(codes) - x[2500:], axis=1) / np.linalg.norm(x[2500:], axis=1)
    assert np.median(err) < 0.25
    loaded = KakeyaCodec.from_bytes(codec.to_bytes())
    assert np.array_equal(loaded.encode(x[2500:]), codes)
    assert np.array_equal(codec.encode(x[2500:]), codes)
    assert np.allclose(loaded.decode(codes), codec.decode(codes))
