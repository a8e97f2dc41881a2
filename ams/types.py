"""Result types of the public API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODES = ("full", "prefix", "flat", "text", "hybrid", "none")


@dataclass(frozen=True)
class MemoryRecord:
    """One stored memory, as `get` and `get_all` return it."""

    id: str
    text: str
    ts: float
    session: str | None
    role: str
    meta: dict[str, Any] | None
    created_at: float
    updated_at: float
    access_count: int
    speaker: str | None = None  # who said it (dialogue turns)


@dataclass(frozen=True)
class Hit:
    """One retrieved memory: its fused score and each bundle's score."""

    id: str
    text: str
    score: float
    ts: float
    scores: dict[str, float] = field(default_factory=dict)
    session: str | None = None
    role: str = "user"
    speaker: str | None = None


@dataclass(frozen=True)
class Generation:
    """An answer and how it was made."""

    text: str
    mode: str
    memory_ids: list[str]  # the memories used, best first (`hybrid`: the channel's choice first, by `hybrid_text`)
    in_tokens: int  # prompt tokens plus prefix slots
    prefix_slots: int
    retrieve_ms: float
    generate_ms: float  # its batch's generation time divided by the batch's size
    truncated: bool = False  # full mode: the history was cut on the left to fit the context
    batch: int = 1  # questions generated together with this one
