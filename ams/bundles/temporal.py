"""The temporal bundle: when a memory was written, as SPCE phases of its absolute time.

base  (2J,)    [cos θ_j, sin θ_j] / sqrt(J) with θ_j = (ω_j t) mod 2π, t the unix time in seconds;
               the ω_j are J log-spaced atoms from one cycle a minute to one per ten years
dirn  (2J,)    equal to base (already unit norm)
fiber (2J+2,)  [base, recency, log1p(access count)], recency = 2^(-age / half-life)
Query point: the phases of "now". The base inner product is (1/J) Σ_j cos(ω_j Δt), a multi-scale
recency kernel: 1 for memories written now, falling as the slow atoms drift apart.

Precision: ω t reaches 1e9 radians for the fastest atom at today's unix times; fp32 loses whole
radians there, so the product and its reduction mod 2π are fp64 and only the reduced phase is cast
to fp32 before sin/cos.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..config import TemporalConfig
from .base import BundleTriple


def log_spaced_omegas(cfg: TemporalConfig) -> np.ndarray:
    """Angular frequencies (J,) fp64, log-spaced between the longest and shortest period."""
    periods = np.geomspace(cfg.longest_period_s, cfg.shortest_period_s, cfg.n_atoms)
    return 2.0 * math.pi / periods


def phases_from_time(t: np.ndarray, omegas: np.ndarray) -> Tensor:
    """SPCE phase features of unix times `t` (N,) -> (N, 2J) fp32, rows of unit norm."""
    theta = np.mod(np.outer(np.asarray(t, dtype=np.float64), omegas), 2.0 * math.pi)  # (N, J) fp64
    theta32 = torch.from_numpy(theta.astype(np.float32))
    return torch.cat([theta32.cos(), theta32.sin()], dim=-1) / math.sqrt(len(omegas))


class TemporalBundle:
    """Owns the time axis of the memory."""

    name = "temporal"

    def __init__(self, cfg: TemporalConfig) -> None:
        self.cfg = cfg
        self.omegas = log_spaced_omegas(cfg)
        self.d_base = 2 * cfg.n_atoms
        self.d_fiber = self.d_base + 2

    def encode(self, ts: np.ndarray, *, now: float, access_count: np.ndarray) -> BundleTriple:
        """Triples for memories written at unix times `ts` (N,), read at time `now`."""
        base = phases_from_time(ts, self.omegas)  # (N, 2J)
        return BundleTriple(base=base, fiber=self.fiber(base, ts, now=now, access_count=access_count),
                            dirn=base)

    def fiber(self, base: Tensor, ts: np.ndarray, *, now: float, access_count: np.ndarray) -> Tensor:
        age_days = np.maximum(now - np.asarray(ts, dtype=np.float64), 0.0) / 86400.0
        recency = torch.from_numpy((0.5 ** (age_days / self.cfg.recency_half_life_days)).astype(np.float32))
        count = torch.from_numpy(np.log1p(np.asarray(access_count, dtype=np.float32)))
        return torch.cat([base, recency[:, None], count[:, None]], dim=-1)  # (N, 2J+2)

    def query(self, now: float) -> Tensor:
        """The query's point on the base: the phases of `now`, (2J,)."""
        return phases_from_time(np.array([now]), self.omegas)[0]
