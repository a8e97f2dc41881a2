"""Cross-bundle attention: the retrieved memories' fibers become prefix embeddings.

For each bundle b, a query head maps the question's point on b's base space, concatenated with the
backbone's pooled hidden state of the question (scaled to unit norm), to a query q_b; attention weights are
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
Salient-token slots: a pooled fiber blends a memory's words into one vector, from which a frozen
reader cannot spell a name it has never seen. So the channel also reads the retrieved memories'
most surprising words (`HFBackbone.salient_ids`: whole words, chosen by the backbone's own
surprisal) as input embeddings, through a map that starts at the identity and a scale that starts
at one, and puts them before the pooled slots. A store gives it the words of the memory it
chooses only (`PrefixConfig.salient_memories`, `Memory._choice`): beside the right memory's words,
the reader answers from the other memories' as readily.

Glossary: B batch, K retrieved memories, L slots, S salient-token slots, d backbone width.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .bundles import BUNDLES
from .checkpoints import save_safetensors
from .errors import InvalidInput, StoreCorrupted, StoreMismatch

# bundles whose attention says which memory a question is about: the training's retrieval term pulls
# it toward the gold memory, and it picks the memories whose salient words the prefix keeps
RELEVANCE_BUNDLES = ("topic", "context")


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
        # salient-token slots: the retrieved memories' most surprising words, as input embeddings
        self.token_map = nn.Linear(d_model, d_model, bias=False)
        with torch.no_grad():
            self.token_map.weight.copy_(torch.eye(d_model))
        self.token_scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, q_base: dict[str, Tensor], q_hidden: Tensor, dirn: dict[str, Tensor],
                fiber: dict[str, Tensor], mask: Tensor | None = None,
                tokens: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Prefix slots for a batch of questions.

        Args:
            q_base: bundle -> (B, d_base) the question's point on each base space.
            q_hidden: (B, d) the backbone's pooled hidden state of the question.
            dirn: bundle -> (B, K, d_base) the retrieved memories' directions.
            fiber: bundle -> (B, K, d_fiber) the retrieved memories' fibers.
            mask: (B, K) True where a memory is present (fewer than K retrieved).
            tokens: (B, S, d) input embeddings of the retrieved memories' salient words, best
                memory first, or None; they become S slots of their own, before the L others.

        Returns:
            (prefix (B, S + L, d), attention weights {bundle: (B, K)}).
        """
        outs, weights = [], {}
        # unit norm: a backbone's hidden states are hundreds of times longer than a base point, and a
        # small trained weight on them would swamp the base term and the temperature
        hidden = F.normalize(q_hidden.float(), dim=-1).to(q_hidden.dtype)
        for b in BUNDLES:
            q = self.query_heads[b](torch.cat([q_base[b], hidden], dim=-1))  # (B, d_base)
            logits = torch.einsum("bd,bkd->bk", q, dirn[b]) / self.temperature  # (B, K)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            w = logits.softmax(-1)  # (B, K)
            weights[b] = w
            outs.append(torch.einsum("bk,bkd->bd", w, self.values[b](fiber[b])))  # (B, d)
        o = torch.cat(outs, dim=-1)  # (B, 3d)
        u = torch.einsum("lde,be->bld", self.lifts, o)  # (B, L, d)
        prefix = self.scale * self.norm(u) / math.sqrt(self.d_model)
        if tokens is not None:
            prefix = torch.cat([self.token_slots(tokens).to(prefix.dtype), prefix], dim=1)
        return prefix, weights

    def token_slots(self, tokens: Tensor) -> Tensor:
        """(B, S, d) salient-token slots from the words' input embeddings (B, S, d). They do not
        depend on the attention, so a caller may add them after it (`Memory._prefix` does, reading
        only the words of the memories it keeps)."""
        return self.token_scale * self.token_map(tokens.to(self.token_map.weight.dtype))

    @staticmethod
    def relevance(weights: dict[str, Tensor]) -> Tensor:
        """(B, K) the mean topic and context attention on each retrieved memory: the channel's own
        ranking of them, trained by the retrieval term (a store weighs it with retrieval's score:
        `Memory._choice`)."""
        return torch.stack([weights[b] for b in RELEVANCE_BUNDLES]).mean(0)

    @staticmethod
    def top_memories(score: Tensor, n: int) -> Tensor:
        """(B, min(n, K)) the n memories of highest score (B, K), in retrieval order. The words of
        the other retrieved memories sit beside the right ones in the prefix and the reader answers
        from them as readily."""
        return score.topk(min(n, score.shape[1]), dim=-1).indices.sort(-1).values

    @classmethod
    def kept_tokens(cls, score: Tensor, token_memory: Tensor, n: int) -> Tensor:
        """(B, S) True for the salient-token slots of the `n` memories of highest score (B, K)
        (`top_memories`), every one where n is 0. token_memory (B, S): the memory each slot's word
        comes from."""
        if not n:
            return torch.ones_like(token_memory, dtype=torch.bool)
        top = cls.top_memories(score, n)  # (B, n)
        return (token_memory[..., None] == top[:, None, :]).any(-1)  # (B, S)

    def to_bytes(self) -> bytes:
        return st_save({k: v.detach().contiguous() for k, v in self.state_dict().items()})

    def load_bytes(self, data: bytes) -> None:
        try:
            self.load_state_dict(st_load(data))
        except Exception as e:  # bad bytes or shapes
            raise StoreCorrupted(f"unreadable attention weights: {e}") from e


# -- trained weights ---------------------------------------------------------------------------
CHANNEL_FORMAT = "ams-channel/1"


def save_channel(channel: CrossBundleAttention, backbone, path: str | Path, *, salient_tokens: int = 0,
                 salient_order: str = "surprisal", recipe: dict | None = None) -> None:
    """Write a trained channel (safetensors, fp16: half the bytes, and the prefix it makes is the
    same to within fp16 rounding), tagged with its backbone's identity, its shapes, and the salient
    tokens per memory and their order it was trained with (a store that loads it uses those)."""
    meta = {"format": CHANNEL_FORMAT, "backbone_identity": backbone.identity, "backbone_name": backbone.name,
            "slots": str(channel.slots), "d_model": str(channel.d_model), "salient_tokens": str(int(salient_tokens)),
            "salient_order": salient_order, "recipe": json.dumps(recipe or {})}
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in channel.state_dict().items()}
    save_safetensors(state, path, meta)


def load_channel(data: bytes, channel: CrossBundleAttention, backbone_identity: str) -> dict[str, str]:
    """Load weights written by `save_channel` into `channel`; returns their metadata.

    Raises:
        InvalidInput: the bytes are not a channel weights file.
        StoreMismatch: they were trained for another backbone or another slot layout.
    """
    try:
        meta = _safetensors_metadata(data)
        state = st_load(data)
    except Exception as e:
        raise InvalidInput(f"not a channel weights file: {e}") from e
    if meta.get("format") != CHANNEL_FORMAT:
        raise InvalidInput(f"not a channel weights file (format {meta.get('format')!r}, want {CHANNEL_FORMAT!r})")
    if meta.get("backbone_identity") != backbone_identity:
        raise StoreMismatch(f"channel weights were trained for backbone {meta.get('backbone_name')!r} "
                            f"(identity {meta.get('backbone_identity')}); this one's identity is {backbone_identity}")
    try:
        channel.load_state_dict(state)
    except RuntimeError as e:
        raise StoreMismatch(f"channel weights do not fit this store's prefix settings "
                            f"({meta.get('slots')} slots in the file, {channel.slots} here): {e}") from e
    return meta


SHIPPED_CHANNELS = {"smollm2-135m-instruct": "channel-smollm2-135m-instruct.safetensors"}  # backbone name -> file


def shipped_channel(backbone_name: str) -> Path | None:
    """The trained channel the package ships for a backbone (`ams/data`), or None. How each was
    trained, with the command that reproduces it: BENCHMARKS.md, "Training the memory channel"."""
    name = SHIPPED_CHANNELS.get(backbone_name)
    if name is None:
        return None
    path = Path(__file__).parent / "data" / name
    return path if path.is_file() else None


def channel_identity(data: bytes) -> str | None:
    """The backbone identity a channel weights file was trained for; None if it is not one."""
    try:
        return _safetensors_metadata(data).get("backbone_identity")
    except (ValueError, UnicodeDecodeError):
        return None


def channel_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (the header is 8 bytes of length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n <= 0 or 8 + n > len(data):
        raise ValueError("truncated header")
    return dict(json.loads(data[8 : 8 + n]).get("__metadata__") or {})
