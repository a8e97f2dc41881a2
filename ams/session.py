"""The session file format (JSON Lines) and the hit rule.

    {"type": "fact", "id": "f01", "text": "...", "ts": 1767225600, "session": "s1", "user_id": "u1"}
    {"type": "query", "text": "...", "keywords": ["chopin"], "fact_ids": ["f01"], "forbidden": ["berlin"]}

A query is a hit when the answer contains any keyword as a whole word (case-insensitive, accents
folded) and no forbidden word.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InvalidInput


@dataclass(frozen=True)
class Fact:
    id: str
    text: str
    ts: float | None = None
    session: str | None = None
    user_id: str | None = None
    role: str = "user"
    distractor: bool = False


@dataclass(frozen=True)
class Query:
    text: str
    keywords: list[str]
    fact_ids: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Session:
    facts: list[Fact]
    queries: list[Query]


def seed_path() -> Path:
    """The original benchmark's session (20 facts, 10 questions), shipped in the package."""
    return Path(str(resources.files("ams") / "data" / "seed_session.jsonl"))


def load_session(path: str | Path) -> Session:
    """Read a session file.

    Raises:
        InvalidInput: a line is not JSON, or lacks a required field.
    """
    facts, queries = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{path}:{n}: not JSON: {e}") from e
            if not isinstance(obj, dict):
                raise InvalidInput(f"{path}:{n}: expected an object")
            kind = obj.get("type")
            try:
                if kind == "fact":
                    facts.append(Fact(id=str(obj.get("id", f"f{n}")), text=obj["text"], ts=obj.get("ts"),
                                      session=obj.get("session"), user_id=obj.get("user_id"),
                                      role=obj.get("role", "user"), distractor=bool(obj.get("distractor", False))))
                elif kind == "query":
                    queries.append(Query(text=obj["text"], keywords=list(obj["keywords"]),
                                         fact_ids=list(obj.get("fact_ids", [])),
                                         forbidden=list(obj.get("forbidden", []))))
                else:
                    raise InvalidInput(f"{path}:{n}: type must be 'fact' or 'query', got {kind!r}")
            except KeyError as e:
                raise InvalidInput(f"{path}:{n}: missing field {e}") from e
    return Session(facts, queries)


def fold(text: str) -> str:
    """Lower-case and strip accents: 'Chopín' -> 'chopin'."""
    nfkd = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in nfkd if not unicodedata.combining(c))


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(fold(word))}(?!\w)", fold(text)) is not None


def is_hit(answer: str, keywords: list[str], forbidden: list[str] = ()) -> bool:
    """Whole-word, case- and accent-insensitive keyword match with no forbidden word."""
    return any(_has_word(answer, k) for k in keywords) and not any(_has_word(answer, w) for w in forbidden)


def is_substring_hit(answer: str, keywords: list[str]) -> bool:
    """The original benchmark's rule: any keyword as a substring, case-insensitive."""
    return any(k.lower() in answer.lower() for k in keywords)
