"""What every bundle gives for a memory: a (base, fiber, dirn) triple."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BundleTriple:
    """One bundle's view of N memories.

    base:  (N, d_base)  the memory's point on the bundle's base space (when / what / which talk)
    fiber: (N, d_fiber) what the memory carries over that point, read by cross-bundle attention
    dirn:  (N, d_base)  unit direction of the base point: the retrieval key of the bundle's tree
    """

    base: Tensor
    fiber: Tensor
    dirn: Tensor

    def __post_init__(self) -> None:
        n = self.base.shape[0]
        if self.fiber.shape[0] != n or self.dirn.shape != self.base.shape:
            raise ValueError(
                f"inconsistent triple: base {tuple(self.base.shape)}, fiber "
                f"{tuple(self.fiber.shape)}, dirn {tuple(self.dirn.shape)}"
            )
        norms = self.dirn.norm(dim=-1)
        if n and not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise ValueError("dirn rows must have unit norm")
