"""Batched Kakeya encode with a product-quantised residual, fused in one Triton kernel.

What `KakeyaCodec.encode` computes for a codec with `pq_bytes = m` (see ams/kakeya/codec.py),
with the codec's axis and segment centres given in the vectors' own coordinates (R^T t_dir, R^T c_s):
    xc     = x - mean
    alpha  = <xc, t_dir>;  seg = argmax_s <xc, c_s>;  t = <xc, c_seg>
                                                   (the centres are orthogonal to t_dir, so the
                                                   perpendicular part need not be formed)
    res    = xc - fp16(alpha) t_dir - fp16(t) c_seg   the residual decode will have to add back
    code_j = argmin_k ||res[j::m] - P_jk||^2         sub-quantiser j holds coordinates j, j + m, ...
One program handles BLOCK_N vectors: a first pass over column blocks accumulates alpha and the
segment scores (`tl.dot`); a second pass rebuilds each interleaved residual sub-vector from x and
assigns it to its nearest of 256 centroids. Encoding has no gradient (codes are integers), so there
is no autograd Function here. Plain PQ (`PQCodec`) is the case with no coarse part: a zero t_dir and
one zero centre give alpha = t = 0 and res = xc.

Glossary: n vectors, d width, S segments, m sub-quantisers, ds = ceil(d / m) their width.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the reference below is what runs without Triton
    HAS_TRITON = False


if HAS_TRITON:

    @triton.jit
    def _kakeya_encode_fwd_kernel(
        X, MEAN, TDIR, CENT, PQ,  # inputs: (n, d), (d,), (d,), (S, d), (m, 256, ds)
        ALPHA, T, SEG, CODES,  # outputs: (n,) fp32, (n,) fp32, (n,) int32, (n, m) uint8
        n, d, S, m, ds,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DS: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < n
        s_idx = tl.arange(0, BLOCK_S)
        alpha = tl.zeros([BLOCK_N], dtype=tl.float32)
        proj = tl.zeros([BLOCK_N, BLOCK_S], dtype=tl.float32)  # <xc, c_s>
        # pass 1: alpha and the segment scores, one column block at a time
        for j0 in range(0, d, BLOCK_D):
            cols = j0 + tl.arange(0, BLOCK_D)
            cmask = cols < d
            xk = tl.load(X + rows[:, None] * d + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
            mk = tl.load(MEAN + cols, mask=cmask, other=0.0)
            xc = tl.where(cmask[None, :], xk.to(tl.float32) - mk[None, :], 0.0)  # (BLOCK_N, BLOCK_D)
            td = tl.load(TDIR + cols, mask=cmask, other=0.0)
            alpha += tl.sum(xc * td[None, :], axis=1)
            c = tl.load(CENT + s_idx[None, :] * d + cols[:, None], mask=(s_idx[None, :] < S) & cmask[:, None],
                        other=0.0)  # (BLOCK_D, BLOCK_S)
            proj += tl.dot(xc, c, input_precision="ieee")
        proj = tl.where(s_idx[None, :] < S, proj, float("-inf"))
        seg = tl.argmax(proj, axis=1)  # (BLOCK_N,)
        t = tl.max(proj, axis=1)
        alpha16 = alpha.to(tl.float16).to(tl.float32)  # the values decode will see
        t16 = t.to(tl.float16).to(tl.float32)
        tl.store(ALPHA + rows, alpha16, mask=rmask)
        tl.store(T + rows, t16, mask=rmask)
        tl.store(SEG + rows, seg.to(tl.int32), mask=rmask)
        # pass 2: each sub-quantiser's interleaved residual sub-vector -> nearest of 256 centroids
        i_idx = tl.arange(0, BLOCK_DS)
        k_idx = tl.arange(0, 256)
        for j in range(0, m):
            coords = j + i_idx * m
            cm = (i_idx < ds) & (coords < d)  # coordinates past d are the zero padding
            lmask = rmask[:, None] & cm[None, :]
            xs = tl.load(X + rows[:, None] * d + coords[None, :], mask=lmask, other=0.0).to(tl.float32)
            ms = tl.load(MEAN + coords, mask=cm, other=0.0)
            tds = tl.load(TDIR + coords, mask=cm, other=0.0)
            cs = tl.load(CENT + seg[:, None] * d + coords[None, :], mask=lmask, other=0.0)
            res = xs - ms[None, :] - alpha16[:, None] * tds[None, :] - t16[:, None] * cs
            res = tl.where(cm[None, :], res, 0.0)  # (BLOCK_N, BLOCK_DS)
            cb = tl.load(PQ + j * 256 * ds + k_idx[None, :] * ds + i_idx[:, None], mask=(i_idx[:, None] < ds),
                         other=0.0)  # (BLOCK_DS, 256)
            dist = tl.sum(cb * cb, axis=0)[None, :] - 2.0 * tl.dot(res, cb, input_precision="ieee")  # (BLOCK_N, 256)
            code = tl.argmin(dist, axis=1)
            tl.store(CODES + rows * m + j, code.to(tl.uint8), mask=rmask)


def _kakeya_encode_fwd(x: Tensor, mean: Tensor, t_dir: Tensor, centres: Tensor, pq_centroids: Tensor,
                       block_n: int = 32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, d = x.shape
    S = centres.shape[0]
    m, _, ds = pq_centroids.shape
    f32 = dict(device=x.device, dtype=torch.float32)
    x = x.contiguous()
    mean, t_dir, centres, pq_centroids = (a.to(**f32).contiguous() for a in (mean, t_dir, centres, pq_centroids))
    alpha, t = torch.empty(n, **f32), torch.empty(n, **f32)
    seg = torch.empty(n, device=x.device, dtype=torch.int32)
    codes = torch.empty(n, m, device=x.device, dtype=torch.uint8)
    if n:
        _kakeya_encode_fwd_kernel[(triton.cdiv(n, block_n),)](
            x, mean, t_dir, centres, pq_centroids, alpha, t, seg, codes, n, d, S, m, ds,
            BLOCK_N=block_n, BLOCK_D=64, BLOCK_S=max(16, triton.next_power_of_2(S)),
            BLOCK_DS=max(16, triton.next_power_of_2(ds)),
        )
    return alpha.half(), t.half(), seg.long(), codes


_DOC = """Kakeya codes of vectors with a product-quantised residual.

    Args:
        x: (n, d) vectors, fp32, fp16 or bf16 (computed in fp32).
        mean: (d,) the codec's mean.
        t_dir: (d,) its unit axis, in the vectors' coordinates.
        centres: (S, d) its unit segment centres, orthogonal to t_dir, in the vectors' coordinates.
        pq_centroids: (m, 256, ds) sub-quantiser centroids, ds = ceil(d / m).

    Returns:
        (alpha (n,) fp16, t (n,) fp16, seg (n,) int64, codes (n, m) uint8).
"""


def kakeya_encode(x: Tensor, mean: Tensor, t_dir: Tensor, centres: Tensor, pq_centroids: Tensor, *,
                  use_kernel: bool | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if use_kernel is None:  # the Triton kernel on CUDA tensors, the reference elsewhere
        use_kernel = HAS_TRITON and x.is_cuda
    if use_kernel:
        return _kakeya_encode_fwd(x, mean, t_dir, centres, pq_centroids)
    return kakeya_encode_ref(x, mean, t_dir, centres, pq_centroids)


def kakeya_encode_ref(x: Tensor, mean: Tensor, t_dir: Tensor, centres: Tensor, pq_centroids: Tensor,
                      chunk: int = 4096) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, d = x.shape
    m, _, ds = pq_centroids.shape
    t_dir, centres = t_dir.float(), centres.float()
    xc = x.float() - mean.float()  # (n, d)
    alpha = xc @ t_dir
    seg = (xc @ centres.T).argmax(1)  # (n,)
    t = (xc * centres[seg]).sum(1)
    alpha16, t16 = alpha.half(), t.half()
    res = xc - alpha16.float()[:, None] * t_dir - t16.float()[:, None] * centres[seg]
    pad = torch.zeros(n, m * ds, dtype=torch.float32, device=x.device)
    pad[:, :d] = res
    sub = pad.view(n, ds, m).transpose(1, 2)  # (n, m, ds): sub-quantiser j holds coordinates j + i m
    c = pq_centroids.float()
    c_sq = (c**2).sum(-1)  # (m, 256)
    codes = torch.empty(n, m, dtype=torch.uint8, device=x.device)
    for i in range(0, n, chunk):
        dist = c_sq[None] - 2.0 * torch.einsum("bmd,mkd->bmk", sub[i : i + chunk], c)  # (b, m, 256)
        codes[i : i + chunk] = dist.argmin(-1).to(torch.uint8)
    return alpha16, t16, seg, codes


kakeya_encode.__doc__ = kakeya_encode_ref.__doc__ = _DOC
