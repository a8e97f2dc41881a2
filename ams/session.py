"""The session file format (JSON Lines) and the hit rule.

    {"type": "fact", "id": "f01", "text": "...", "ts": 1767225600, "session": "s1", "user_id": "u1",
     "speaker": "Ana"}
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
    speaker: str | None = None  # who said it, for dialogue turns


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
        InvalidInput: the file is missing or not UTF-8, a line is not a JSON object, or a field is
            missing or of the wrong type (the message names the line).
    """
    facts, queries = [], []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: cannot read a UTF-8 JSON Lines file: {e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj: dict[str, Any] = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InvalidInput(f"{path}:{n}: not JSON: {e}") from e
        if not isinstance(obj, dict):
            raise InvalidInput(f"{path}:{n}: expected an object")
        kind = obj.get("type")
        if kind == "fact":
            facts.append(Fact(id=_str(obj.get("id", f"f{n}"), path, n, "id"), text=_str(obj.get("text"), path, n, "text"),
                              ts=obj.get("ts"), session=_opt_str(obj.get("session"), path, n, "session"),
                              user_id=_opt_str(obj.get("user_id"), path, n, "user_id"),
                              role=_str(obj.get("role", "user"), path, n, "role"),
                              distractor=bool(obj.get("distractor", False)),
                              speaker=_opt_str(obj.get("speaker"), path, n, "speaker")))
        elif kind == "query":
            queries.append(Query(text=_str(obj.get("text"), path, n, "text"),
                                 keywords=_strs(obj.get("keywords"), path, n, "keywords", required=True),
                                 fact_ids=_strs(obj.get("fact_ids"), path, n, "fact_ids"),
                                 forbidden=_strs(obj.get("forbidden"), path, n, "forbidden")))
        else:
            raise InvalidInput(f"{path}:{n}: type must be 'fact' or 'query', got {kind!r}")
    return Session(facts, queries)


def is_transcript(path: str | Path) -> bool:
    """Whether a JSON Lines file holds chat messages (`{"role", "content"}`) rather than facts and
    queries (`{"type": ...}`): decided by its first non-empty line. A `.json` file holding a list is
    a transcript too."""
    try:
        with open(path, encoding="utf-8") as f:
            if str(path).endswith(".json"):
                return True
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    return isinstance(obj, dict) and "type" not in obj and "content" in obj
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InvalidInput(f"{path}: cannot read a UTF-8 JSON Lines file: {e}") from e
    return False


def load_transcript(path: str | Path) -> list[dict[str, Any]]:
    """Chat messages from a JSON Lines file (one message a line) or a JSON file holding a list of them.

    A message is `{"role": ..., "content": ..., "name": optional speaker, "session": optional,
    "ts": optional}`; `Memory.add_messages` checks the fields.

    Raises:
        InvalidInput: the file is unreadable, or a line or item is not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if str(path).endswith(".json"):
            items = json.loads(text)
            if not isinstance(items, list):
                raise InvalidInput(f"{path}: a .json transcript must hold a list of messages")
            where = [f"{path}: item {i}" for i in range(len(items))]
        else:
            lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            items = [json.loads(line) for _, line in lines]
            where = [f"{path}:{n}" for n, _ in lines]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InvalidInput(f"{path}: cannot read the transcript: {e}") from e
    for w, m in zip(where, items):
        if not isinstance(m, dict):
            raise InvalidInput(f"{w}: expected a message object")
    return items


def _str(v: Any, path, n: int, name: str) -> str:
    if not isinstance(v, str):
        raise InvalidInput(f"{path}:{n}: {name} must be a string, got {type(v).__name__}")
    return v


def _opt_str(v: Any, path, n: int, name: str) -> str | None:
    return None if v is None else _str(v, path, n, name)


def _strs(v: Any, path, n: int, name: str, *, required: bool = False) -> list[str]:
    if v is None and not required:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidInput(f"{path}:{n}: {name} must be a list of strings")
    return list(v)


def fold(text: str) -> str:
    """Lower-case and strip accents: 'Chopín' -> 'chopin'."""
    text = text.casefold()
    if text.isascii():  # no accents to strip: skip the per-character loop below
        return text
    nfkd = unicodedata.normalize("NFKD", text)
    return "".join(c for c in nfkd if not unicodedata.combining(c))


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(fold(word))}(?!\w)", fold(text)) is not None


def is_hit(answer: str, keywords: list[str], forbidden: list[str] = ()) -> bool:
    """Whole-word, case- and accent-insensitive keyword match with no forbidden word."""
    return any(_has_word(answer, k) for k in keywords) and not any(_has_word(answer, w) for w in forbidden)


def is_substring_hit(answer: str, keywords: list[str]) -> bool:
    """The original benchmark's rule: any keyword as a substring, case-insensitive."""
    return any(k.lower() in answer.lower() for k in keywords)
