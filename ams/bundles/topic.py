"""The topic bundle: what a memory is about.

base  (d_e,)  the memory's sentence embedding (MiniLM, unit norm): the content direction
dirn  (d_e,)  equal to base
fiber (d,)    the backbone's surprisal-weighted centroid of the memory's input token embeddings:
              the content in the backbone's own token space, so attention over fibers can be lifted
              into prefix slots that the backbone reads like tokens
Query point: the question's sentence embedding. d_e is the embedder's width (384), d the backbone's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import BundleTriple


class TopicBundle:
    """Owns the content axis of the memory."""

    name = "topic"

    def __init__(self, d_embed: int, d_model: int) -> None:
        self.d_base = d_embed
        self.d_fiber = d_model

    def encode(self, content: Tensor, salient: Tensor) -> BundleTriple:
        """Triples from content embeddings (N, d_e) and backbone salient centroids (N, d)."""
        dirn = torch.nn.functional.normalize(content, dim=-1)
        return BundleTriple(base=dirn, fiber=salient, dirn=dirn)

    def query(self, content: Tensor) -> Tensor:
        return torch.nn.functional.normalize(content, dim=-1)
