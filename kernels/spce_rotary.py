"""SPCE rotary: rotate q and k by phases taken from absolute time, fused in one Triton kernel.

For token (b, t) of stream s, key/value group g and rotary pair p:
    theta = (omega[s, g, p] * time[b, t]  mod 2 pi)  +  phi[s, g, p]  (+ phase[b, t, g, p])
The product and the reduction run in fp64 (time may be unix seconds: fp32 loses whole radians
after a few hours at high omega); only the reduced angle goes to fp32 for sin/cos. Pairs are
Llama's "rotate half" pairs (x[p], x[p + D/2]), so with omega at RoPE's frequencies, phi = 0 and
time = token index this is exactly RoPE. Query head h uses its group's phases (g = h // (H / Hk)),
so a query-key score depends on the time difference only, as in RoPE.

The backward pass rotates the gradients back by -theta and, when omega, phi or phase need a
gradient, also returns dL/dtheta per (b, t, g, p), summed over the group's heads; the launcher
turns it into d omega = sum dtheta * time (fp64) and d phi = sum dtheta per stream.

Glossary: B batch, T tokens, H query heads, Hk key/value heads, D head width, P = D / 2 pairs,
S streams.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the reference below is what runs without Triton
    HAS_TRITON = False

TWO_PI = 2.0 * math.pi


if HAS_TRITON:

    @triton.jit
    def _spce_cos_sin(TIME, STREAM, OMEGA, PHI, PHASE, tok, g, Hk, P, p_idx, pmask, HAS_PHASE: tl.constexpr):
        """cos and sin (BLOCK_P,) of the reduced angles of token `tok` (a flat b * T + t index), group g."""
        time = tl.load(TIME + tok)  # fp64
        s = tl.load(STREAM + tok)
        w = tl.load(OMEGA + (s * Hk + g) * P + p_idx, mask=pmask, other=0.0).to(tl.float64)
        theta = w * time
        theta = theta - 6.283185307179586 * tl.floor(theta / 6.283185307179586 + 0.5)  # in [-pi, pi)
        theta = theta.to(tl.float32) + tl.load(PHI + (s * Hk + g) * P + p_idx, mask=pmask, other=0.0)
        if HAS_PHASE:
            theta += tl.load(PHASE + (tok * Hk + g) * P + p_idx, mask=pmask, other=0.0)
        return tl.cos(theta), tl.sin(theta)

    @triton.jit
    def _spce_rotary_fwd_kernel(
        Q, K, TIME, STREAM, OMEGA, PHI, PHASE,  # (B*T, H, D), (B*T, Hk, D), (B*T,) fp64, (B*T,) int32, (S, Hk, P) x2, (B*T, Hk, P)
        QO, KO,  # outputs, shaped as Q and K
        H, Hk, P,
        HAS_PHASE: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        tok = tl.program_id(0)
        g = tl.program_id(1)
        p_idx = tl.arange(0, BLOCK_P)
        pmask = p_idx < P
        c, s = _spce_cos_sin(TIME, STREAM, OMEGA, PHI, PHASE, tok, g, Hk, P, p_idx, pmask, HAS_PHASE)
        D = 2 * P
        G = H // Hk
        for j in range(0, G + 1):  # the group's G query heads, then its key head
            if j < G:
                base, out = Q + (tok * H + g * G + j) * D, QO + (tok * H + g * G + j) * D
            else:
                base, out = K + (tok * Hk + g) * D, KO + (tok * Hk + g) * D
            x1 = tl.load(base + p_idx, mask=pmask, other=0.0).to(tl.float32)
            x2 = tl.load(base + P + p_idx, mask=pmask, other=0.0).to(tl.float32)
            tl.store(out + p_idx, (x1 * c - x2 * s).to(out.dtype.element_ty), mask=pmask)
            tl.store(out + P + p_idx, (x2 * c + x1 * s).to(out.dtype.element_ty), mask=pmask)

    @triton.jit
    def _spce_rotary_bwd_kernel(
        Q, K, DQO, DKO, TIME, STREAM, OMEGA, PHI, PHASE,  # inputs as in the forward, plus dL/d outputs
        DQ, DK, DTHETA,  # (B*T, H, D), (B*T, Hk, D), (B*T, Hk, P) fp32
        H, Hk, P,
        HAS_PHASE: tl.constexpr, NEED_DTHETA: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        tok = tl.program_id(0)
        g = tl.program_id(1)
        p_idx = tl.arange(0, BLOCK_P)
        pmask = p_idx < P
        c, s = _spce_cos_sin(TIME, STREAM, OMEGA, PHI, PHASE, tok, g, Hk, P, p_idx, pmask, HAS_PHASE)
        D = 2 * P
        G = H // Hk
        dtheta = tl.zeros([BLOCK_P], dtype=tl.float32)
        for j in range(0, G + 1):
            if j < G:
                row = (tok * H + g * G + j) * D
                x_ptr, go_ptr, gi_ptr = Q + row, DQO + row, DQ + row
            else:
                row = (tok * Hk + g) * D
                x_ptr, go_ptr, gi_ptr = K + row, DKO + row, DK + row
            g1 = tl.load(go_ptr + p_idx, mask=pmask, other=0.0).to(tl.float32)
            g2 = tl.load(go_ptr + P + p_idx, mask=pmask, other=0.0).to(tl.float32)
            tl.store(gi_ptr + p_idx, (g1 * c + g2 * s).to(gi_ptr.dtype.element_ty), mask=pmask)
            tl.store(gi_ptr + P + p_idx, (g2 * c - g1 * s).to(gi_ptr.dtype.element_ty), mask=pmask)
            if NEED_DTHETA:  # d y1 / d theta = -y2, d y2 / d theta = y1
                x1 = tl.load(x_ptr + p_idx, mask=pmask, other=0.0).to(tl.float32)
                x2 = tl.load(x_ptr + P + p_idx, mask=pmask, other=0.0).to(tl.float32)
                dtheta += g2 * (x1 * c - x2 * s) - g1 * (x2 * c + x1 * s)
        if NEED_DTHETA:
            tl.store(DTHETA + (tok * Hk + g) * P + p_idx, dtheta, mask=pmask)


def _prepare(q: Tensor, k: Tensor, time: Tensor, stream: Tensor | None):
    B, T, H, D = q.shape
    Hk = k.shape[2]
    if D % 2 or k.shape[:2] != (B, T) or k.shape[3] != D or H % Hk:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must be (B, T, H, D) and (B, T, Hk, D) "
                         "with D even and H a multiple of Hk")
    time = time.to(device=q.device, dtype=torch.float64).expand(B, T).contiguous()
    if stream is None:
        stream = torch.zeros(B, T, dtype=torch.int32, device=q.device)
    stream = stream.to(device=q.device, dtype=torch.int32).expand(B, T).contiguous()
    return B, T, H, Hk, D, time, stream


def _spce_rotary_fwd(q, k, time, stream, omega, phi, phase):
    B, T, H, Hk, D, time, stream = _prepare(q, k, time, stream)
    q, k = q.contiguous(), k.contiguous()
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    f32 = dict(device=q.device, dtype=torch.float32)
    omega, phi = omega.to(**f32).contiguous(), phi.to(**f32).contiguous()
    phase_arg = phase.to(**f32).contiguous() if phase is not None else phi
    if B * T:
        _spce_rotary_fwd_kernel[(B * T, Hk)](
            q, k, time, stream, omega, phi, phase_arg, qo, ko, H, Hk, D // 2,
            HAS_PHASE=phase is not None, BLOCK_P=triton.next_power_of_2(D // 2),
        )
    return qo, ko


class SpceRotaryFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, time, stream, omega, phi, phase):
        B, T, H, Hk, D, time, stream = _prepare(q, k, time, stream)
        qo, ko = _spce_rotary_fwd(q, k, time, stream, omega, phi, phase)
        ctx.save_for_backward(q, k, time, stream, omega, phi, phase)
        return qo, ko

    @staticmethod
    def backward(ctx, dqo, dko):
        q, k, time, stream, omega, phi, phase = ctx.saved_tensors
        B, T, H, D = q.shape
        Hk, P = k.shape[2], D // 2
        need_dtheta = any(ctx.needs_input_grad[4:7])
        q, k = q.contiguous(), k.contiguous()
        dqo, dko = dqo.contiguous(), dko.contiguous()
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        f32 = dict(device=q.device, dtype=torch.float32)
        dtheta = torch.empty(B, T, Hk, P, **f32) if need_dtheta else dq
        omega32, phi32 = omega.to(**f32).contiguous(), phi.to(**f32).contiguous()
        phase_arg = phase.to(**f32).contiguous() if phase is not None else phi32
        if B * T:
            _spce_rotary_bwd_kernel[(B * T, Hk)](
                q, k, dqo, dko, time, stream, omega32, phi32, phase_arg, dq, dk, dtheta, H, Hk, P,
                HAS_PHASE=phase is not None, NEED_DTHETA=need_dtheta, BLOCK_P=triton.next_power_of_2(P),
            )
        domega = dphi = dphase = None
        if need_dtheta:
            domega, dphi = _param_grads(dtheta, time, stream.long(), omega.shape[0])
            domega, dphi = domega.to(omega.dtype), dphi.to(phi.dtype)
            dphase = dtheta.to(phase.dtype) if phase is not None else None
        return dq, dk, None, None, domega, dphi, dphase


def _param_grads(dtheta: Tensor, time: Tensor, stream: Tensor, S: int) -> tuple[Tensor, Tensor]:
    """d omega, d phi (S, Hk, P) from dL/dtheta (B, T, Hk, P): theta = omega * time + phi."""
    Hk, P = dtheta.shape[2:]
    flat = dtheta.reshape(-1, Hk * P)
    idx = stream.reshape(-1)
    dphi = torch.zeros(S, Hk * P, dtype=torch.float32, device=dtheta.device).index_add_(0, idx, flat)
    weighted = flat.double() * time.reshape(-1, 1)  # fp64: time may be ~1e9 seconds
    domega = torch.zeros(S, Hk * P, dtype=torch.float64, device=dtheta.device).index_add_(0, idx, weighted)
    return domega.view(S, Hk, P), dphi.view(S, Hk, P)


_DOC = """Rotate q and k by SPCE phases of absolute time.

    Args:
        q: (B, T, H, D) queries, fp32, fp16 or bf16 (computed in fp32, returned in q's dtype).
        k: (B, T, Hk, D) keys; H must be a multiple of Hk.
        time: (B, T) or (T,) absolute time of each token, converted to fp64.
        stream: (B, T) or (T,) integer stream of each token, or None for all stream 0.
        omega: (S, Hk, D/2) angular frequency of each stream, group and rotary pair (radians per
            unit of time).
        phi: (S, Hk, D/2) phase offset of each stream, group and pair.
        phase: optional (B, T, Hk, D/2) extra per-token phase (the spatial term k . r).

    Returns:
        (q_rot, k_rot), shaped and typed as q and k. Differentiable in q, k, omega, phi and phase.
"""


def spce_rotary(q: Tensor, k: Tensor, time: Tensor, omega: Tensor, phi: Tensor, *, stream: Tensor | None = None,
                phase: Tensor | None = None, use_kernel: bool | None = None) -> tuple[Tensor, Tensor]:
    if use_kernel is None:  # the Triton kernel on CUDA tensors, the reference elsewhere
        use_kernel = HAS_TRITON and q.is_cuda
    if use_kernel:
        return SpceRotaryFn.apply(q, k, time, stream, omega, phi, phase)
    return spce_rotary_ref(q, k, time, omega, phi, stream=stream, phase=phase)


def phases_from_time(time: Tensor, omega: Tensor, phi: Tensor, stream: Tensor | None = None,
                     phase: Tensor | None = None) -> Tensor:
    """Angles (B, T, Hk, P) fp32: (omega * time mod 2 pi, in fp64) + phi (+ phase).

    The reduction is invisible to autograd: d theta / d omega is time, as for the unreduced angle.
    """
    time = time.double()
    if time.dim() == 1:
        time = time[None]
    s = torch.zeros_like(time, dtype=torch.long) if stream is None else stream.long().expand_as(time)
    w = omega[s]  # (B, T, Hk, P)
    theta = w.double() * time[..., None, None]
    turns = torch.floor(theta.detach() / TWO_PI + 0.5)
    theta = (theta - TWO_PI * turns).float() + phi[s].float()
    return theta + phase.float() if phase is not None else theta


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate "rotate half" pairs of x (..., D) by angles given as cos, sin (..., D/2), in fp32."""
    P = x.shape[-1] // 2
    x1, x2 = x[..., :P].float(), x[..., P:].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def spce_rotary_ref(q: Tensor, k: Tensor, time: Tensor, omega: Tensor, phi: Tensor, *, stream: Tensor | None = None,
                    phase: Tensor | None = None) -> tuple[Tensor, Tensor]:
    B, T, H, Hk, D, time, stream = _prepare(q, k, time, stream)
    theta = phases_from_time(time, omega, phi, stream, phase)  # (B, T, Hk, P)
    cos, sin = theta.cos(), theta.sin()
    G = H // Hk
    qc, qs = cos.repeat_interleave(G, dim=2), sin.repeat_interleave(G, dim=2)  # (B, T, H, P)
    return apply_rotary(q, qc, qs).to(q.dtype), apply_rotary(k, cos, sin).to(k.dtype)


spce_rotary.__doc__ = spce_rotary_ref.__doc__ = _DOC
