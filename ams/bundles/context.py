"""The context bundle: in which conversation a memory was said.

base  (d_e,)  normalize(own + mean(previous turns) + session summary), each a MiniLM embedding:
              the memory placed in its session (own content alone when it has no session)
dirn  (d_e,)  equal to base
fiber (d,)    the backbone's mean-pooled last hidden state of the memory
Query point: the same mixture for the asking session when one is given, else the question's own
embedding, so a memory scores higher when its conversation, not only its sentence, fits the question.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import BundleTriple


def context_point(own: Tensor, previous: Tensor, summary: Tensor) -> Tensor:
    """Mix own (N, d_e), previous-turn mean (N, d_e) and session summary (N, d_e); zero rows = absent."""
    return torch.nn.functional.normalize(own + previous + summary, dim=-1)


class ContextBundle:
    """Owns the conversation axis of the memory."""

    name = "context"

    def __init__(self, d_embed: int, d_model: int) -> None:
        self.d_base = d_embed
        self.d_fiber = d_model

    def encode(self, context: Tensor, hidden: Tensor) -> BundleTriple:
        """Triples from context points (N, d_e) (see `context_point`) and hidden states (N, d)."""
        dirn = torch.nn.functional.normalize(context, dim=-1)
        return BundleTriple(base=dirn, fiber=hidden, dirn=dirn)

    def query(self, context: Tensor) -> Tensor:
        return torch.nn.functional.normalize(context, dim=-1)
