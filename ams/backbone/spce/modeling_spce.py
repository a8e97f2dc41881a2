"""SPCE: a Llama-shaped causal LM on continuous time, with windowed attention and a carry.

Three changes to a Llama decoder, each reducing to it at its initial values:
- rotary phases from absolute time, theta = omega . t + k . r + phi0 (see kernels/spce_rotary.py):
  a shared palette of learnable omega atoms, mixed per layer, key/value head and rotary pair by a
  softmax that starts one-hot on RoPE's frequencies;
- sliding-window attention: a token sees itself and the w - 1 tokens before it;
- a carry: per layer, a diagonal complex recurrence over windows,
      h_c = lambda_c * h_{c-1} + (1 - |lambda_c|) * u_c,   lambda_c = exp((-alpha + i omega) dt_c),
  where u_c is a projection of the mean of window c's (normed) inputs, dt_c the time since the
  previous window ended and alpha > 0, so |lambda| < 1 and the state stays bounded. Tokens of
  window c read h_{c-1} through a gate that starts at zero.
Windows are fixed blocks of w token slots counted from the start of the stream, so a stream can be
decoded with constant memory (`SpceCache`: a ring buffer of w keys and values per layer plus the
carry), and its state checkpointed every K windows (keyframes) to rewind to.

Two forward paths compute the same function: without a cache, attention runs in query blocks of
w over all tokens and the carry scans window means; with a cache, the input is cut at window
boundaries and each piece attends to the ring buffer. Tests check that they agree.

Glossary: B batch, T tokens, d hidden size, H query heads, Hk key/value heads, D head width,
P = D / 2 rotary pairs, A palette atoms, S time streams, L layers, w window, C windows, n carry
channels, K windows between keyframes.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from ...kernels.spce_rotary import spce_rotary
from .configuration_spce import SpceConfig

# the output field generate() reads the cache from: `cache` from transformers 5.24, `past_key_values` before
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class SpceRMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SpceMLP(nn.Module):
    def __init__(self, config: SpceConfig):
        super().__init__()
        d, f, b = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=b)
        self.up_proj = nn.Linear(d, f, bias=b)
        self.down_proj = nn.Linear(f, d, bias=b)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def rope_frequencies(n: int, theta: float) -> Tensor:
    """RoPE's n frequencies theta^(-a/n), computed as transformers computes them (so equal in fp32)."""
    return 1.0 / (theta ** (torch.arange(0, 2 * n, 2, dtype=torch.int64).float() / (2 * n)))


class SpceRotary(nn.Module):
    """The frequency palette and, per layer, each pair's atom mixture, phase offsets and wave vectors."""

    def __init__(self, config: SpceConfig):
        super().__init__()
        L, Hk, P, A = config.num_hidden_layers, config.num_key_value_heads, config.head_dim // 2, config.n_atoms
        self.config = config
        self.atoms = nn.Parameter(torch.empty(A))  # (A,) omega, radians per unit of time
        self.selection = nn.Parameter(torch.empty(L, Hk, P, A))  # softmax over atoms
        self.phi = nn.Parameter(torch.empty(L, config.n_streams, Hk, P))
        self.wavevectors = nn.Parameter(torch.empty(L, Hk, P, config.spatial_dims)) if config.spatial_dims else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        A, P = self.atoms.shape[0], self.selection.shape[2]
        init.copy_(self.atoms, rope_frequencies(A, self.config.rope_theta))
        # pair p starts on atom p A / P: with A = P, pair p has RoPE's frequency p
        onehot = F.one_hot((torch.arange(P) * A) // P, A).float() * self.config.selection_sharpness
        init.copy_(self.selection, onehot.expand_as(self.selection))
        init.zeros_(self.phi)
        if self.wavevectors is not None:
            init.zeros_(self.wavevectors)

    def forward(self, layer: int) -> tuple[Tensor, Tensor]:
        """omega (S, Hk, P), each stream's mixed frequencies capped below pi per step; phi (S, Hk, P)."""
        mix = torch.softmax(self.selection[layer].float(), dim=-1)  # (Hk, P, A)
        omega = mix @ self.atoms.float().abs()  # (Hk, P); exactly an atom where mix is one-hot
        steps = torch.tensor(self.config.stream_time_steps, dtype=torch.float32, device=omega.device)
        cap = (0.999 * math.pi / steps)[:, None, None]  # (S, 1, 1)
        return torch.minimum(omega[None], cap), self.phi[layer].float()

    def spatial_phase(self, layer: int, positions: Tensor | None) -> Tensor | None:
        """k . r per token (B, T, Hk, P), or None without a spatial term."""
        if self.wavevectors is None or positions is None:
            return None
        return torch.einsum("btr,gpr->btgp", positions.float(), self.wavevectors[layer].float())


def window_attention(q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, key_valid: Tensor | None,
                     window: int, scale: float) -> Tensor:
    """Causal attention limited to the `window` latest slots: q_pos - window < k_pos <= q_pos.

    q (B, H, Tq, D), k and v (B, Hk, Tk, D), q_pos (Tq,) and k_pos (Tk,) absolute slot indices,
    key_valid (B, Tk) bool or None. A query always sees itself (no row is empty). Returns (B, H, Tq, D).
    """
    rel = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk)
    mask = (rel >= 0) & (rel < window)
    mask = mask[None, None]  # (1, 1, Tq, Tk)
    if key_valid is not None:
        mask = mask & key_valid[:, None, None, :] | (rel == 0)[None, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


class SpceAttention(nn.Module):
    def __init__(self, config: SpceConfig, layer_idx: int):
        super().__init__()
        d, H, Hk, D, b = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                          config.head_dim, config.attention_bias)
        self.layer_idx, self.H, self.Hk, self.D = layer_idx, H, Hk, D
        self.window = config.sliding_window
        self.scale = D**-0.5
        self.q_proj = nn.Linear(d, H * D, bias=b)
        self.k_proj = nn.Linear(d, Hk * D, bias=b)
        self.v_proj = nn.Linear(d, Hk * D, bias=b)
        self.o_proj = nn.Linear(H * D, d, bias=b)

    def _qkv(self, x: Tensor, rot: SpceRotary, time: Tensor, stream: Tensor | None, positions: Tensor | None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D)  # (B, T, H, D)
        k = self.k_proj(x).view(B, T, self.Hk, self.D)  # (B, T, Hk, D)
        v = self.v_proj(x).view(B, T, self.Hk, self.D).transpose(1, 2)  # (B, Hk, T, D)
        omega, phi = rot(self.layer_idx)
        q, k = spce_rotary(q, k, time, omega, phi, stream=stream, phase=rot.spatial_phase(self.layer_idx, positions))
        return q.transpose(1, 2), k.transpose(1, 2), v  # (B, H, T, D), (B, Hk, T, D) x2

    def forward(self, x: Tensor, rot: SpceRotary, time: Tensor, stream: Tensor | None, positions: Tensor | None,
                valid: Tensor | None) -> Tensor:
        """All T tokens, slots 0..T-1, in query blocks of w (each sees its block and the w before it)."""
        B, T, _ = x.shape
        q, k, v = self._qkv(x, rot, time, stream, positions)
        w = self.window
        pos = torch.arange(T, device=x.device)
        outs = []
        for a in range(0, T, w):
            b, lo = min(T, a + w), max(0, a - w + 1)
            outs.append(window_attention(q[:, :, a:b], k[:, :, lo:b], v[:, :, lo:b], pos[a:b], pos[lo:b],
                                         None if valid is None else valid[:, lo:b], w, self.scale))
        y = torch.cat(outs, dim=2).transpose(1, 2).reshape(B, T, self.H * self.D)  # (B, T, H D)
        return self.o_proj(y)

    def forward_stream(self, x: Tensor, rot: SpceRotary, time: Tensor, stream: Tensor | None,
                       positions: Tensor | None, valid: Tensor, cache: SpceCache) -> Tensor:
        """T <= w tokens at slots cache.seen.., against the ring buffer; writes their keys and values to it."""
        B, T, _ = x.shape
        q, k, v = self._qkv(x, rot, time, stream, positions)
        buf_k, buf_v = cache.keys[self.layer_idx], cache.values[self.layer_idx]  # (B, Hk, w, D)
        pos = cache.seen + torch.arange(T, device=x.device)
        keys = torch.cat([buf_k.to(k.dtype), k], dim=2)
        vals = torch.cat([buf_v.to(v.dtype), v], dim=2)
        k_pos = torch.cat([cache.slot_pos, pos])
        k_valid = torch.cat([cache.slot_valid & (cache.slot_pos >= 0)[None], valid], dim=1)
        y = window_attention(q, keys, vals, pos, k_pos, k_valid, self.window, self.scale)
        slots = pos % self.window
        buf_k[:, :, slots] = k.to(buf_k.dtype)
        buf_v[:, :, slots] = v.to(buf_v.dtype)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.H * self.D))


class SpceCarry(nn.Module):
    """Per-layer state across windows; its output is gated and the gate starts at zero."""

    def __init__(self, config: SpceConfig):
        super().__init__()
        d, n = config.hidden_size, config.carry_size
        self.config = config
        self.proj_in = nn.Linear(d, 2 * n, bias=False)  # window mean -> (Re u, Im u)
        self.proj_out = nn.Linear(2 * n, d, bias=False)
        self.log_alpha = nn.Parameter(torch.empty(n))  # decay rate alpha = exp(log_alpha) > 0
        self.omega = nn.Parameter(torch.empty(n))  # rotation, radians per unit of time
        self.gate = nn.Parameter(torch.empty(d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        n, w = self.omega.shape[0], self.config.sliding_window
        lo, hi = self.config.carry_decay_windows
        memory = torch.logspace(math.log10(lo), math.log10(hi), n) * w  # in token time
        init.copy_(self.log_alpha, -memory.log())
        init.copy_(self.omega, torch.logspace(math.log10(math.pi / (hi * w)), math.log10(math.pi / w), n))
        init.zeros_(self.gate)

    def read(self, h: Tensor) -> Tensor:
        """(..., n, 2) state -> (..., d) contribution to the residual stream."""
        return self.gate * self.proj_out(h.flatten(-2).to(self.proj_out.weight.dtype))

    def step(self, h: Tensor, mean: Tensor, dt: Tensor) -> Tensor:
        """h (B, n, 2), window mean (B, d), dt (B,) -> next h. fp32 throughout."""
        u = self.proj_in(mean.to(self.proj_in.weight.dtype)).float().view(*mean.shape[:-1], -1, 2)  # (B, n, 2)
        dt = dt.float()[:, None]  # (B, 1)
        mag = torch.exp(-self.log_alpha.float().exp() * dt)  # |lambda| < 1 for dt > 0
        ang = self.omega.float() * dt
        re = mag * (ang.cos() * h[..., 0] - ang.sin() * h[..., 1])
        im = mag * (ang.sin() * h[..., 0] + ang.cos() * h[..., 1])
        return torch.stack([re, im], -1) + (1 - mag)[..., None] * u

    def forward(self, x: Tensor, time: Tensor, valid: Tensor | None) -> Tensor:
        """Full path: x (B, T, d) normed layer inputs at slots 0..T-1 -> reads (B, T, d)."""
        B, T, d = x.shape
        w = self.config.sliding_window
        C = -(-T // w)
        m = torch.ones(B, T, device=x.device, dtype=torch.bool) if valid is None else valid
        pad = C * w - T
        xs = F.pad(x.float() * m[..., None], (0, 0, 0, pad)).view(B, C, w, d)
        counts = F.pad(m.float(), (0, pad)).view(B, C, w).sum(-1)  # (B, C)
        tv = F.pad(torch.where(m, time, -math.inf), (0, pad), value=-math.inf).view(B, C, w)
        t_end = tv.max(-1).values  # (B, C) fp64, the latest valid time in each window
        t_first = torch.where(m, time, math.inf).min(-1).values  # (B,)
        h = x.new_zeros(B, self.omega.shape[0], 2, dtype=torch.float32)
        t_prev = t_first - 1
        reads = []
        for c in range(C):
            reads.append(h)
            h, t_prev = carry_update(self, h, t_prev, xs[:, c].sum(1), counts[:, c], t_end[:, c])
        r = self.read(torch.stack(reads, 1))  # (B, C, d)
        return r.repeat_interleave(w, dim=1)[:, :T].to(x.dtype)


def carry_update(carry: SpceCarry, h: Tensor, t_prev: Tensor, total: Tensor, count: Tensor, t_end: Tensor):
    """Close a window: fold its mean into h unless it held no valid token. Returns (h, t_prev)."""
    has = count > 0
    mean = total / count.clamp_min(1)[:, None]
    dt = torch.where(has, t_end - t_prev, 0.0).clamp_min(0)
    h_next = carry.step(h, mean, dt)
    return torch.where(has[:, None, None], h_next, h), torch.where(has, t_end, t_prev)


class SpceDecoderLayer(nn.Module):
    def __init__(self, config: SpceConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = SpceAttention(config, layer_idx)
        self.mlp = SpceMLP(config)
        self.input_layernorm = SpceRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = SpceRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.carry = SpceCarry(config) if config.carry_size else None

    def forward(self, h: Tensor, rot: SpceRotary, time: Tensor, stream: Tensor | None, positions: Tensor | None,
                valid: Tensor | None, cache: SpceCache | None = None) -> Tensor:
        x = self.input_layernorm(h)
        if cache is None:
            h = h + self.self_attn(x, rot, time, stream, positions, valid)
            if self.carry is not None:
                h = h + self.carry(x, time, valid)
        else:
            h = h + self.self_attn.forward_stream(x, rot, time, stream, positions, valid, cache)
            if self.carry is not None:
                h = h + self.carry.read(cache.carry[self.layer_idx]).to(h.dtype)[:, None]
                cache.carry_sum[self.layer_idx] += (x.float() * valid[..., None]).sum(1)
        return h + self.mlp(self.post_attention_layernorm(h))


class SpceCache:
    """Constant-size state of a decoding stream: per layer the last w keys and values (a ring
    buffer indexed by slot mod w) and the carry, plus keyframes every K windows.

    Args:
        config: the model's configuration.
        batch_size: rows decoded together.
        device, dtype: where and in which dtype keys and values live (the carry is fp32).
    """

    def __init__(self, config: SpceConfig, batch_size: int, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        L, Hk, D = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        B, n, d = batch_size, config.carry_size, config.hidden_size
        self.config = config
        # the ring buffer grows to w slots as the stream does (a full-width window stays cheap)
        self.keys = [torch.zeros(B, Hk, 0, D, device=device, dtype=dtype) for _ in range(L)]
        self.values = [torch.zeros(B, Hk, 0, D, device=device, dtype=dtype) for _ in range(L)]
        self.slot_pos = torch.full((0,), -1, dtype=torch.long, device=device)  # slot -> absolute slot index
        self.slot_valid = torch.zeros(B, 0, dtype=torch.bool, device=device)
        self.carry = [torch.zeros(B, n, 2, device=device) for _ in range(L)]
        self.carry_sum = [torch.zeros(B, d, device=device) for _ in range(L)]  # of the current window
        self.count = torch.zeros(B, device=device)  # valid tokens in the current window
        self.t_end = torch.full((B,), -math.inf, dtype=torch.float64, device=device)
        self.t_prev = torch.full((B,), math.nan, dtype=torch.float64, device=device)  # NaN: nothing seen yet
        self.seen = 0  # slots consumed since the stream began
        self.keyframes: OrderedDict[int, dict] = OrderedDict()  # window index -> state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    @property
    def is_linear(self) -> list[bool]:
        """Per layer, whether generate() must not slice inputs by `get_seq_length` (no: slots are counted)."""
        return [False] * self.config.num_hidden_layers

    def reserve(self, slots: int) -> None:
        """Grow the ring buffer (by doubling, at most to w) to hold `slots` slots."""
        cap, w = self.slot_pos.shape[0], self.config.sliding_window
        if slots <= cap:
            return
        new = min(w, max(slots, 2 * cap))
        grow = lambda t, fill: torch.cat([t, t.new_full((*t.shape[:-2], new - cap, t.shape[-1]), fill)], -2)  # noqa: E731
        self.keys = [grow(k, 0) for k in self.keys]
        self.values = [grow(v, 0) for v in self.values]
        self.slot_pos = torch.cat([self.slot_pos, self.slot_pos.new_full((new - cap,), -1)])
        self.slot_valid = torch.cat([self.slot_valid, self.slot_valid.new_zeros(self.slot_valid.shape[0], new - cap)], 1)

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Keep rows `beam_idx` (B,) of every per-row tensor, keyframes included (beam search)."""
        def pick(state: dict) -> None:
            for k, v in state.items():
                if isinstance(v, list):
                    state[k] = [t.index_select(0, beam_idx.to(t.device)) for t in v]
                elif isinstance(v, Tensor) and k != "slot_pos":
                    state[k] = v.index_select(0, beam_idx.to(v.device))

        own = {k: v for k, v in vars(self).items() if k not in ("keyframes", "config")}
        pick(own)
        for k, v in own.items():
            setattr(self, k, v)
        for frame in self.keyframes.values():
            pick(frame)

    def nbytes(self) -> int:
        """Bytes held by the stream's state, keyframes included: constant in the stream's length."""
        state = [*self.keys, *self.values, *self.carry, *self.carry_sum, self.slot_pos, self.slot_valid]
        own = sum(t.numel() * t.element_size() for t in state)
        return own * (1 + len(self.keyframes))

    def advance(self, model: SpceModel, time: Tensor, valid: Tensor) -> None:
        """Record T <= w new slots (after every layer has used the old ring buffer); close full windows."""
        T = time.shape[1]
        w = self.config.sliding_window
        pos = self.seen + torch.arange(T, device=self.slot_pos.device)
        self.slot_pos[pos % w] = pos
        self.slot_valid[:, pos % w] = valid
        first = torch.where(valid, time, math.inf).min(1).values
        self.t_prev = torch.where(self.t_prev.isnan() & valid.any(1), first - 1, self.t_prev)
        self.t_end = torch.maximum(self.t_end, torch.where(valid, time, -math.inf).max(1).values)
        self.count += valid.sum(1)
        self.seen += T
        if self.seen % w:
            return
        t_prev = self.t_prev
        for layer in model.layers:
            i = layer.layer_idx
            if layer.carry is not None:
                self.carry[i], t_prev = carry_update(layer.carry, self.carry[i], self.t_prev, self.carry_sum[i],
                                                     self.count, self.t_end)
            self.carry_sum[i].zero_()
        self.t_prev = t_prev
        self.t_end.fill_(-math.inf)
        self.count.zero_()
        window = self.seen // w
        if self.config.max_keyframes and window % self.config.keyframe_every == 0:
            self.keyframes[window] = self._state()
            while len(self.keyframes) > self.config.max_keyframes:
                self.keyframes.popitem(last=False)

    def _state(self) -> dict:
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if k not in ("keyframes", "config")}

    def rewind(self, window: int) -> None:
        """Return the stream to the keyframe taken when `window` windows had closed.

        Raises:
            KeyError: no keyframe is kept for that window (see `keyframes` for those that are).
        """
        if window not in self.keyframes:
            raise KeyError(f"no keyframe at window {window}; kept: {list(self.keyframes)}")
        for k, v in copy.deepcopy(self.keyframes[window]).items():
            setattr(self, k, v)
        for later in [k for k in self.keyframes if k > window]:
            del self.keyframes[later]


class SpcePreTrainedModel(PreTrainedModel):
    config_class = SpceConfig
    config: SpceConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["SpceDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _keep_in_fp32_modules_strict = ["rotary"]  # omega keeps fp32 in fp16 and bf16: theta = omega * t, t ~ 1e9 s

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, SpceRotary | SpceCarry):
            module.reset_parameters()
        elif isinstance(module, SpceRMSNorm):
            init.ones_(module.weight)
        else:
            super()._init_weights(module)


class SpceModel(SpcePreTrainedModel):
    def __init__(self, config: SpceConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.rotary = SpceRotary(config)
        self.layers = nn.ModuleList([SpceDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = SpceRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values: SpceCache | None = None,
                inputs_embeds: Tensor | None = None, use_cache: bool | None = None, times: Tensor | None = None,
                streams: Tensor | None = None, spatial: Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs) -> tuple[Tensor, SpceCache | None, tuple | None]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, d)
        B, T, _ = h.shape
        cache = past_key_values
        if use_cache and cache is None:
            cache = SpceCache(self.config, B, device=h.device, dtype=h.dtype)
        past = cache.seen if cache is not None else 0
        if times is None:  # token time: the position ids generate() derives from the mask, else slot index
            times = position_ids if position_ids is not None else past + torch.arange(T, device=h.device)[None]
        times = times.to(torch.float64).expand(B, T)
        if streams is not None and streams.numel() and not 0 <= int(streams.min()) <= int(streams.max()) < self.config.n_streams:
            raise ValueError(f"streams must lie in [0, {self.config.n_streams}), got {int(streams.min())}.."
                             f"{int(streams.max())}")
        valid = None
        if attention_mask is not None:
            valid = attention_mask[:, -T:].bool()  # generate() passes the mask of past and new tokens
        hidden = [h] if output_hidden_states else None
        if cache is None:
            for layer in self.layers:
                h = layer(h, self.rotary, times, streams, spatial, valid)
                if hidden is not None:
                    hidden.append(h)
        else:
            h = self._forward_stream(h, times, streams, spatial, valid, cache, hidden)
        h = self.norm(h)
        if hidden is not None:
            hidden[-1] = h  # as transformers' Llama: the last entry is the normed output
        return h, cache, tuple(hidden) if hidden is not None else None

    def _forward_stream(self, h, times, streams, spatial, valid, cache: SpceCache, hidden: list | None) -> Tensor:
        """Cut the input at window boundaries; each piece goes through every layer, then the cache advances."""
        B, T, _ = h.shape
        w = self.config.sliding_window
        valid = torch.ones(B, T, dtype=torch.bool, device=h.device) if valid is None else valid
        outs = []
        per_layer: list[list[Tensor]] | None = [[] for _ in range(len(self.layers) + 1)] if hidden is not None else None
        a = 0
        while a < T:
            b = min(T, a + w - cache.seen % w)
            cache.reserve(min(w, cache.seen + b - a))
            piece = slice(a, b)
            s_piece = None if streams is None else streams[:, piece]
            r_piece = None if spatial is None else spatial[:, piece]
            x = h[:, piece]
            for i, layer in enumerate(self.layers):
                if per_layer is not None:
                    per_layer[i].append(x)
                x = layer(x, self.rotary, times[:, piece], s_piece, r_piece, valid[:, piece], cache)
            if per_layer is not None:
                per_layer[-1].append(x)
            cache.advance(self, times[:, piece], valid[:, piece])
            outs.append(x)
            a = b
        if hidden is not None and per_layer is not None:
            hidden[:] = [torch.cat(p, 1) for p in per_layer]
        return torch.cat(outs, 1)


class SpceForCausalLM(SpcePreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SpceConfig):
        super().__init__(config)
        self.model = SpceModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own SpceCache

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values: SpceCache | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None, use_cache: bool | None = None,
                times: Tensor | None = None, streams: Tensor | None = None, spatial: Tensor | None = None,
                output_hidden_states: bool | None = None, logits_to_keep: int = 0, cache: SpceCache | None = None,
                **kwargs) -> CausalLMOutputWithPast:
        """Llama's causal LM forward, plus the SPCE inputs.

        Args:
            times: (B, T) absolute time of each token (fp64 is kept); default the position ids, or
                the slot index in the stream.
            streams: (B, T) integer time stream of each token; default stream 0.
            spatial: (B, T, spatial_dims) positions r for the k . r term.
            past_key_values, cache: an `SpceCache` to continue a stream (give either: transformers
                5.24 renamed the argument); with `use_cache` and none given, a new one is returned.
            (the rest as in `LlamaForCausalLM.forward`)
        """
        if past_key_values is not None and cache is not None:
            raise ValueError("give the stream's SpceCache as one of past_key_values and cache, not both")
        h, cache, hidden = self.model(input_ids, attention_mask, position_ids,
                                      cache if cache is not None else past_key_values, inputs_embeds,
                                      use_cache, times, streams, spatial, output_hidden_states)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden, **{_CACHE_FIELD: cache})

    @classmethod
    def from_llama(cls, llama: PreTrainedModel, *, sliding_window: int | None = None, carry_size: int = 0,
                   **overrides) -> SpceForCausalLM:
        """Convert a Llama-family causal LM (SmolLM2 included) into an SPCE model.

        The palette starts at the source's RoPE frequencies with one-hot selection, time defaults to
        the token index and the carry gate is zero, so with `sliding_window` at least the sequence
        length the converted model computes the source's logits.

        Args:
            llama: a transformers `LlamaForCausalLM` (default RoPE, no scaling).
            sliding_window: w; default the source's `max_position_embeddings` (full attention).
            carry_size: carry channels (their gate starts at zero); 0 leaves the carry out.
            overrides: further `SpceConfig` fields (e.g. `n_streams`, `keyframe_every`).

        Raises:
            ValueError: the source is not a Llama-shaped model with default RoPE.
        """
        src = llama.config
        rope = getattr(src, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(src, "rope_theta", None)}
        if src.model_type != "llama" or rope.get("rope_type", "default") != "default" or not rope.get("rope_theta"):
            raise ValueError(f"from_llama needs a Llama model with default RoPE, got {src.model_type!r} with {rope}")
        head_dim = getattr(src, "head_dim", None) or src.hidden_size // src.num_attention_heads
        config = SpceConfig(
            vocab_size=src.vocab_size, hidden_size=src.hidden_size, intermediate_size=src.intermediate_size,
            num_hidden_layers=src.num_hidden_layers, num_attention_heads=src.num_attention_heads,
            num_key_value_heads=src.num_key_value_heads, head_dim=head_dim, hidden_act=src.hidden_act,
            rms_norm_eps=src.rms_norm_eps, attention_bias=src.attention_bias, mlp_bias=src.mlp_bias,
            initializer_range=src.initializer_range, max_position_embeddings=src.max_position_embeddings,
            rope_theta=rope["rope_theta"], n_atoms=head_dim // 2,
            sliding_window=sliding_window or src.max_position_embeddings, carry_size=carry_size,
            tie_word_embeddings=src.tie_word_embeddings, bos_token_id=src.bos_token_id,
            eos_token_id=src.eos_token_id, pad_token_id=src.pad_token_id, **overrides,
        )
        model = cls(config)
        state = {k: v for k, v in llama.state_dict().items() if "rotary_emb" not in k}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed = ("model.rotary.", ".carry.", "lm_head.weight")
        if unexpected or any(not any(a in m for a in allowed) for m in missing):
            raise ValueError(f"weights do not map onto SPCE: missing {missing}, unexpected {unexpected}")
        if config.tie_word_embeddings:
            model.tie_weights()
        if getattr(llama, "generation_config", None) is not None:
            model.generation_config = copy.deepcopy(llama.generation_config)
        model = model.to(dtype=next(llama.parameters()).dtype)
        model.model.rotary.float()  # the frequencies stay fp32 whatever the weights' dtype
        return model
