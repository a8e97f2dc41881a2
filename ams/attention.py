"""Cross-bundle attention: the retrieved memories' fibers become prefix embeddings.

For each bundle b, a query head maps the question's point on b's base space, concatenated with the
backbone's pooled hidden state of the question, to a query q_b; attention weights are
softmax(<q_b, dirn_b,i> / temperature) over the top-k memories i; the bundle's output is the
weighted sum of value projections V_b(fiber_b,i). Each prefix slot j has its own lift of the three
outputs into the backbone's width, followed by a LayerNorm and a learnable scale:
    slot_j = scale * LN(lift_j([o_temporal; o_topic; o_context])) / sqrt(d)
so a slot's norm starts at the backbone's mean token-embedding norm (the earlier system's prefix
was 20x louder than tokens and made the model repeat itself).

Untrained initialisation (what `prefix` and `hybrid` use until the channel is trained): query heads
pass the base point through and ignore the hidden state; the topic value is the identity (its fiber
already lives in the token-embedding space), the temporal and context values start at zero; lifts
are the identity on the topic output plus small seeded noise. A slot is then the attention-weighted
content centroid of the retrieved memories, in the backbone's own token space.
Glossary: B batch, K retrieved memories, L slots, d backbone width.
"""

from __future__ import annotations

import math

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .bundles import BUNDLES
from .errors import StoreCorrupted


class CrossBundleAttention(nn.Module):
    """Query heads, per-bundle attention over fibers, per-slot lifts, LayerNorm, scale.

    Args:
        d_model: backbone width d.
        base_dims: bundle -> width of its base space.
        fiber_dims: bundle -> width of its fibers.
        slots: prefix slots L.
        temperature: attention softmax temperature.
        token_norm: the backbone's mean token-embedding norm (initial scale).
        seed: seed of the initial weights.
    """

    def __init__(self, d_model: int, base_dims: dict[str, int], fiber_dims: dict[str, int], *,
                 slots: int, temperature: float, token_norm: float, seed: int = 0) -> None:
        super().__init__()
        self.d_model, self.slots, self.temperature = d_model, slots, temperature
        gen = torch.Generator().manual_seed(seed)
        self.query_heads = nn.ModuleDict()
        self.values = nn.ModuleDict()
        for b in BUNDLES:
            head = nn.Linear(base_dims[b] + d_model, base_dims[b], bias=False)
            with torch.no_grad():
                head.weight.zero_()
                head.weight[:, : base_dims[b]] = torch.eye(base_dims[b])
            self.query_heads[b] = head
            value = nn.Linear(fiber_dims[b], d_model, bias=False)
            with torch.no_grad():
                value.weight.zero_()
                if b == "topic" and fiber_dims[b] == d_model:
                    value.weight.copy_(torch.eye(d_model))
            self.values[b] = value
        self.lifts = nn.Parameter(torch.zeros(slots, d_model, len(BUNDLES) * d_model))  # (L, d, 3d)
        with torch.no_grad():
            t = BUNDLES.index("topic")
            self.lifts[:, :, t * d_model : (t + 1) * d_model] = torch.eye(d_model)
            self.lifts.add_(torch.randn(self.lifts.shape, generator=gen) * (0.02 / math.sqrt(d_model)))
        self.norm = nn.LayerNorm(d_model, eps=1e-8)  # fibers of small models have tiny variance
        self.scale = nn.Parameter(torch.tensor(float(token_norm)))

    def forward(self, q_base: dict[str, Tensor], q_hidden: Tensor, dirn: dict[str, Tensor],
                fiber: dict[str, Tensor], mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Prefix slots for a batch of questions.

        Args:
            q_base: bundle -> (B, d_base) the question's point on each base space.
            q_hidden: (B, d) the backbone's pooled hidden state of the question.
            dirn: bundle -> (B, K, d_base) the retrieved memories' directions.
            fiber: bundle -> (B, K, d_fiber) the retrieved memories' fibers.
            mask: (B, K) True where a memory is present (fewer than K retrieved).

        Returns:
            (prefix (B, L, d), attention weights {bundle: (B, K)}).
        """
        outs, weights = [], {}
        for b in BUNDLES:
            q = self.query_heads[b](torch.cat([q_base[b], q_hidden], dim=-1))  # (B, d_base)
            logits = torch.einsum("bd,bkd->bk", q, dirn[b]) / self.temperature  # (B, K)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            w = logits.softmax(-1)  # (B, K)
            weights[b] = w
            outs.append(torch.einsum("bk,bkd->bd", w, self.values[b](fiber[b])))  # (B, d)
        o = torch.cat(outs, dim=-1)  # (B, 3d)
        u = torch.einsum("lde,be->bld", self.lifts, o)  # (B, L, d)
        prefix = self.scale * self.norm(u) / math.sqrt(self.d_model)
        return prefix, weights

    def to_bytes(self) -> bytes:
        return st_save({k: v.detach().contiguous() for k, v in self.state_dict().items()})

    def load_bytes(self, data: bytes) -> None:
        try:
            self.load_state_dict(st_load(data))
        except Exception as e:  # bad bytes or shapes
            raise StoreCorrupted(f"unreadable attention weights: {e}") from e
