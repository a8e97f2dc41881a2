"""Per-user snapshots: what opening a store reads of a user's memories, as one blob.

Opening a store builds, for one user, the in-memory retrieval indexes from every memory row and
its content and context codes. At 10^5 memories that is 10^5 rows read, checked and turned into
columns, and 2 x 10^5 vector rows joined to them. A snapshot holds the same columns and codes in
one safetensors blob (one row of the `snapshots` table), current to a history event: a reopen
reads the blob and catches up through the history log from that event, the way an open handle
catches up with other processes' writes.

A snapshot is derived data. The rows stay the source of truth: a snapshot that fails its
checksum, was made under another schema, or lags too far behind the log is ignored and the rows
are read instead (`Memory` then writes a fresh one). `Memory.verify` checks a snapshot against
the rows.

Glossary: N rows of the snapshot (the user's memories at its event, in write order).
Tensors (safetensors, no pickle):
    strings              uint8, UTF-8 JSON {"id": [N], "session": [N], "speaker": [N]} (null for none)
    ts                   float64 (N,)
    question, correction uint8 (N,): the row is a question / a correction of its speaker (`Memory`'s rules)
    {field}.version      int32 (N,), field in FIELDS: the codec version of each row's vector (0: raw)
    {field}.{v}          the rows of version v in write order: uint8 codes (n_v, code_size), or
                         float32 vectors (n_v, d) for v = 0
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .errors import StoreCorrupted
from .store import unpack

FORMAT = "ams-snapshot/1"
FIELDS = ("content", "context")  # the vectors opening decodes into retrieval keys


class SnapshotInvalid(ValueError):
    """A snapshot that cannot be used: damaged, of another format or schema, or inconsistent."""


@dataclass
class Snapshot:
    """A user's rows at history event `event`, as `Memory` builds its indexes from them."""

    event: int  # the newest history event (of any user) the snapshot includes
    schema: int  # the store's schema version when it was made
    codec_keys: set[tuple[str, int]]  # the codec versions the store held
    columns: dict[str, list]  # id, session, speaker: lists of N
    ts: np.ndarray  # (N,) float64
    question: np.ndarray  # (N,) bool
    correction: np.ndarray  # (N,) bool
    vectors: dict[str, tuple[np.ndarray, dict[int, np.ndarray]]]  # field -> (versions (N,), version -> rows)

    def __len__(self) -> int:
        return len(self.ts)


def pack(snapshot: Snapshot) -> bytes:
    """The snapshot as safetensors bytes (checked by `unpack_snapshot` on the way back)."""
    strings = json.dumps({k: snapshot.columns[k] for k in ("id", "session", "speaker")}, ensure_ascii=False)
    tensors = {
        "strings": np.frombuffer(strings.encode("utf-8", "surrogatepass"), dtype=np.uint8),
        "ts": np.ascontiguousarray(snapshot.ts, dtype=np.float64),
        "question": np.asarray(snapshot.question, dtype=np.uint8),
        "correction": np.asarray(snapshot.correction, dtype=np.uint8),
    }
    for field, (versions, blocks) in snapshot.vectors.items():
        tensors[f"{field}.version"] = np.asarray(versions, dtype=np.int32)
        for v, rows in blocks.items():
            tensors[f"{field}.{v}"] = np.ascontiguousarray(rows)
    meta = {"format": FORMAT, "event": str(snapshot.event), "schema": str(snapshot.schema),
            "codecs": json.dumps(sorted(snapshot.codec_keys))}
    return st_save(tensors, metadata=meta)


def unpack_snapshot(data: bytes, checksum: int) -> Snapshot:
    """Parse and check snapshot bytes; raise `SnapshotInvalid` for anything but a whole, consistent one."""
    if zlib.crc32(data) != checksum:
        raise SnapshotInvalid("the snapshot fails its checksum")
    try:
        tensors = st_load(data)
        meta = _metadata(data)
        if meta.get("format") != FORMAT:
            raise SnapshotInvalid(f"unknown snapshot format {meta.get('format')!r}")
        strings = json.loads(tensors["strings"].tobytes().decode("utf-8", "surrogatepass"))
        columns = {k: strings[k] for k in ("id", "session", "speaker")}
        n = len(tensors["ts"])
        vectors = {}
        for field in FIELDS:
            versions = tensors[f"{field}.version"].astype(np.int64)
            blocks = {}
            for v in np.unique(versions).tolist():
                rows = tensors[f"{field}.{v}"]
                if len(rows) != int((versions == v).sum()) or rows.ndim != 2:
                    raise SnapshotInvalid(f"{field} rows of version {v} do not match their count")
                blocks[v] = rows
            if len(versions) != n:
                raise SnapshotInvalid(f"{field} versions do not cover every row")
            vectors[field] = versions, blocks
        if any(len(c) != n for c in columns.values()) or len(tensors["question"]) != n \
                or len(tensors["correction"]) != n:
            raise SnapshotInvalid("the snapshot's columns differ in length")
        return Snapshot(event=int(meta["event"]), schema=int(meta["schema"]),
                        codec_keys={(str(s), int(v)) for s, v in json.loads(meta["codecs"])},
                        columns=columns, ts=tensors["ts"], question=tensors["question"].astype(bool),
                        correction=tensors["correction"].astype(bool), vectors=vectors)
    except SnapshotInvalid:
        raise
    except Exception as e:  # safetensors, JSON and key errors alike: the bytes are not a snapshot
        raise SnapshotInvalid(f"unreadable snapshot: {type(e).__name__}: {e}") from e


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's `__metadata__` (an 8-byte little-endian length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}


def stored_blocks(field: str, versions: list[int], data: list[bytes]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A field's vectors as `Store.memory_columns` returns them (versions, data as stored) ->
    (versions (N,), version -> its rows in write order), the form a snapshot keeps: a codec
    version's codes joined into one array, not one per row.

    Raises:
        StoreCorrupted: the rows of one version differ in length.
    """
    v = np.asarray(versions, dtype=np.int64)
    blocks = {}
    for version in np.unique(v).tolist():
        idx = np.flatnonzero(v == version)
        if version == 0:  # raw float32, a safetensors blob a row
            blocks[0] = stacked([unpack(data[i]) for i in idx], field, 0).astype(np.float32)
            continue
        size = len(data[idx[0]])
        joined = b"".join([data[i] for i in idx])
        if len(joined) != size * len(idx):
            raise StoreCorrupted(f"vectors of {field!r} coded by version {version} differ in length")
        blocks[version] = np.frombuffer(joined, dtype=np.uint8).reshape(len(idx), size)
    return v, blocks


def stacked(arrays: list[np.ndarray], field: str, version: int) -> np.ndarray:
    """One field's stored arrays of one codec version as rows (n, width); they must agree in width."""
    if len({a.shape for a in arrays}) > 1:
        raise StoreCorrupted(f"vectors of {field!r} coded by version {version} differ in length")
    return np.stack(arrays)
