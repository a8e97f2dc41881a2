"""`ams.Memory`: the facade that composes backbone, encoders, bundles, codecs, retrieval and store.

write(text) -> MiniLM content embedding + backbone encoding (hidden, salient)
            -> context point from the session's earlier turns
            -> Kakeya registry codes (raw until a set has trained) -> SQLite, one transaction
               (the FTS5 index of the texts follows by trigger)
            -> the in-memory bundle indexes get the *decoded* vectors
generate(q) -> the question's point on each bundle -> tree-filtered retrieval fused with the lexical
               (BM25), speaker, recency and question channels (and, for dialogue turns, specificity,
               the people a turn names, and turn context) -> top-k
            -> prompt (memory texts in text/flat/hybrid, dialogue turns with their neighbours,
               the whole history in full)
            -> cross-bundle attention over the top-k fibers -> prefix (prefix/hybrid)
            -> backbone.generate(inputs_embeds=[prefix; prompt])
The parts never call each other; only this module wires them.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import functools
import itertools
import json
import math
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .attention import CrossBundleAttention, channel_digest, channel_identity, load_channel, shipped_channel
from .backbone import DEFAULT_BACKBONE, HFBackbone, load_backbone
from .backbone.hf import SALIENT_ORDERS
from .bundles import BUNDLES, ContextBundle, TemporalBundle, TopicBundle, context_point
from .config import MemoryConfig, NewerSettings
from .embedder import SentenceEncoder
from .errors import (
    AmsError,
    EmptyText,
    InvalidInput,
    MemoryNotFound,
    SchemaTooNew,
    StoreBusy,
    StoreClosed,
    StoreCorrupted,
    StoreMismatch,
    TextTooLong,
    UnknownMode,
)
from .kakeya import KakeyaRegistry, default_sets, load_codec
from .retrieval import BundleIndex, FlatIndex, fuse
from .session import fold
from .snapshot import FIELDS as SNAPSHOT_FIELDS
from .snapshot import Snapshot, SnapshotInvalid, stacked, stored_blocks, unpack_snapshot
from .snapshot import pack as pack_snapshot
from .store import Store, busy_error
from .turns import (
    CORRECTION_REACH,
    NAME_WORD,
    STOPWORDS,
    Holder,
    about_others,
    content_words,
    corrects,
    holders,
    is_question,
    named_people,
    turn_line,
    turn_window,
)
from .types import MODES, Generation, Hit, MemoryRecord

FIELDS = ("content", "context", "salient", "hidden")  # the per-memory vectors the registry codes
ROLES = ("user", "assistant", "system")
# A user with this many memories gets a snapshot (`ams.snapshot`) when opening read their rows:
# below it, opening from the rows takes under a second (0.77 s at 10^4, BENCHMARKS.md "Scale").
SNAPSHOT_MIN_ROWS = 10_000
# opening reads the rows instead of a snapshot that the log has more events since than this share
# of its rows (or of SNAPSHOT_MIN_ROWS, when fewer): catching up costs a query per 500 events
SNAPSHOT_LAG = 0.1
SNAPSHOT_WAIT_MS = 50  # how long opening waits for the write lock to store a snapshot
MAX_SPEAKER_CHARS = 200
UNTRAINED, SHIPPED = "untrained", "shipped"  # `weights=` choices that name no file (recorded as such)


@functools.lru_cache(maxsize=4)
def _shared_backbone(name: str) -> HFBackbone:
    return load_backbone(name)


@functools.lru_cache(maxsize=1)
def _shared_embedder() -> SentenceEncoder:
    return SentenceEncoder.shipped()


def _guarded(fn):
    """Run a public call of a `Memory` under its lock (one call at a time, whichever thread makes
    it), and translate what SQLite raises on a damaged or locked file into the library's typed errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if args and isinstance(args[0], Memory):
                with args[0]._lock:
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as e:
            busy = busy_error(e)
            if busy is not None:
                raise busy from e
            msg = str(e).lower()
            if "full" in msg or "readonly" in msg or "i/o" in msg:
                raise AmsError(f"the store file could not be written: {e}") from e
            raise StoreCorrupted(f"the store is damaged: {e}") from e
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise StoreCorrupted(f"the store is damaged: {e}") from e

    return wrapper


@dataclass
class _Plan:
    """One question, ready for the backbone."""

    ids: list[int]  # prompt token ids
    prefix: torch.Tensor | None  # (L, d) prefix embeddings
    rows: list[int]  # index rows of the memories used
    retrieve_ms: float
    truncated: bool
    times: list[float] | None = None  # per prompt token, for backbones that read times (the timeline)
    inputs: dict[str, Any] | None = None  # what the prefix was made from (`_prefix_inputs`), when one was


class Memory:
    """A user's long-term memory in one SQLite store. Open with `Memory.open`.

    One `Memory` may be shared by several threads: its calls run one at a time (a lock per
    `Memory`), so a long `generate` makes the others wait. For answers generated side by side,
    open one `Memory` per thread; handles on the same file see each other's writes, as handles
    in different processes do.
    """

    def __init__(self, store: Store, backbone: HFBackbone, embedder: SentenceEncoder, *,
                 user_id: str, config: MemoryConfig) -> None:
        self.store, self.backbone, self.embedder = store, backbone, embedder
        self.user_id, self.config = user_id, config
        d_e, d = embedder.d, backbone.d_model
        self.temporal = TemporalBundle(config.temporal)
        self.topic = TopicBundle(d_e, d)
        self.context = ContextBundle(d_e, d)
        self.registry = KakeyaRegistry(default_sets(d_e, d), config.kakeya)
        self.attention = CrossBundleAttention(
            d, {"temporal": self.temporal.d_base, "topic": d_e, "context": d_e},
            {"temporal": self.temporal.d_fiber, "topic": d, "context": d},
            slots=config.prefix.slots, temperature=config.prefix.temperature,
            token_norm=backbone.token_embedding_norm, seed=config.prefix.seed,
        ).eval()
        self.weights: str | None = None  # the trained channel's file, when one is loaded
        self._salient_tokens = config.prefix.salient_tokens  # trained weights bring their own
        self._salient_order = config.prefix.salient_order  # and theirs, where they record it
        self._closed = False
        self._lock = threading.RLock()  # public calls run one at a time (`_guarded`)
        self._index: dict[str, BundleIndex] = {}  # bundle -> its retrieval keys, filled by _load
        self._snapshot_due: Snapshot | None = None  # read by `_load`, for `_write_snapshot`
        self._open_indexes()

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    @_guarded
    def open(cls, path: str | Path, *, backbone: str = DEFAULT_BACKBONE, user_id: str = "default",
             config: MemoryConfig | None = None, busy_timeout: float = 10.0,
             weights: str | Path | None = None) -> Memory:
        """Open (or create) a memory store for one user.

        Args:
            path: SQLite file; `":memory:"` gives a throwaway store.
            backbone: `"smollm2-135m-instruct"` (shipped), a local HF model directory, a `.gguf`
                file, or a hub id where a network exists.
            user_id: whose memories this handle reads and writes; other users' rows are never touched.
            config: encoding, retrieval and generation settings; None keeps the store's own (or the
                defaults for a new store).
            busy_timeout: seconds a write waits for another process's write lock before it raises
                `StoreBusy` (nothing is written then).
            weights: trained memory-channel weights (`ams train`) for `prefix` and `hybrid` modes;
                `"untrained"` for the untrained channel, `"shipped"` for the one the package ships
                for the backbone (`ams/data`). The store records the choice (a file with its hash),
                and a later open without `weights=` makes it again. None on a store that records
                none: the shipped channel where one ships for the backbone, else the untrained one.

        Returns:
            An open `Memory`; use it as a context manager or call `close()`.

        Raises:
            StoreCorrupted: the file is not an AMS store or is damaged.
            SchemaTooNew: the store was written by a newer library, with migrations or storage
                settings this one does not know. (Unknown retrieval settings are left out with a
                warning: they change only how searches rank.)
            StoreMismatch: the store was written with another backbone, embedder or codec layout;
                or the weights are for another backbone, or the recorded weights file is gone or changed.
            BackboneNotFound: the backbone cannot be loaded.
            InvalidInput: `user_id` is empty or not a string, `busy_timeout` is negative, the weights
                file cannot be read or is not one, or `weights="shipped"` where none ships for the backbone.
        """
        if not isinstance(user_id, str) or not user_id.strip():
            raise InvalidInput("user_id must be a non-empty string")
        _check_encodable(user_id, "user_id")
        if config is not None and not isinstance(config, MemoryConfig):
            raise InvalidInput("config must be an ams.MemoryConfig")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)) or not 0 <= busy_timeout < 1e6:
            raise InvalidInput(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        store = Store.open(path, busy_timeout_ms=int(busy_timeout * 1000))
        try:
            bb = _shared_backbone(backbone) if isinstance(backbone, str) else backbone
            config = cls._bind(store, bb, config)
            mem = cls(store, bb, _shared_embedder(), user_id=user_id, config=config)
            mem._use_weights(weights)
            mem._write_snapshot()
            return mem
        except BaseException:
            store.close()
            raise

    @staticmethod
    def _bind(store: Store, bb: HFBackbone, config: MemoryConfig | None) -> MemoryConfig:
        """Record the backbone and config in a new store; check them against an existing one
        (read, not locked: opening a bound store does not wait for another process's writes)."""
        ident, stored_cfg = store.get_meta("backbone_identity"), store.get_meta("config")
        if ident is None:
            with store.write():  # two processes may create the store at once: the first one binds it
                ident, stored_cfg = store.get_meta("backbone_identity"), store.get_meta("config")
                if ident is None:
                    config = config or MemoryConfig()
                    for key, value in (("backbone_identity", bb.identity), ("backbone_name", bb.name),
                                       ("embedder", config.embedder), ("config", config.model_dump_json()),
                                       ("answer_time_settings", json.dumps(config.answer_time_settings())),
                                       ("created_at", repr(time.time())), ("created_by", f"ams {__version__}")):
                        store.set_meta(key, value)
                    return config
        if ident != bb.identity:
            raise StoreMismatch(
                f"store was written with backbone {store.get_meta('backbone_name')!r} "
                f"(identity {ident}); this one is {bb.name!r} ({bb.identity})"
            )
        writer = store.get_meta("created_by") or "another ams version"
        try:
            answer_time = json.loads(store.get_meta("answer_time_settings") or "[]")  # none in stores from before
            if not isinstance(answer_time, list) or not all(isinstance(n, str) for n in answer_time):
                raise ValueError(f"answer_time_settings is not a list of names: {answer_time!r}")
            saved, ignored = MemoryConfig.from_stored(stored_cfg, answer_time)
        except NewerSettings as e:
            raise SchemaTooNew(f"the store was created by {writer} with settings ams {__version__} does not know "
                                f"({e}); upgrade ams to open it") from e
        except ValueError as e:
            raise StoreCorrupted(f"store config is unreadable: {e}") from e
        if ignored:
            warnings.warn(f"the store was created by {writer}; ams {__version__} searches and answers without its "
                          f"settings {', '.join(ignored)}", UserWarning, stacklevel=4)
        if config is None:
            return saved
        if config.storage_fields() != saved.storage_fields():
            raise StoreMismatch("config changes how memories are encoded; open without config= or with the "
                                "store's own embedder, context_turns, temporal, kakeya and prefix settings")
        return config

    def _use_weights(self, weights: str | Path | None) -> None:
        """Load the trained channel from `weights`, else the store's recorded choice, else the
        shipped channel; record the choice. The recorded path is "untrained" or "shipped" for those
        two: a shipped channel is the package's, and follows the package when it is upgraded (weights
        never change what is stored, so nothing is re-encoded)."""
        recorded = self.store.get_meta("channel_path"), self.store.get_meta("channel_sha256")
        choice = str(weights) if weights is not None else recorded[0] or SHIPPED
        if choice == UNTRAINED:
            self._record_weights(UNTRAINED, "", recorded)
            return
        if choice == SHIPPED:
            path = shipped_channel(self.backbone.name)
            data = path.read_bytes() if path is not None else b""
            if not data or channel_identity(data) != self.backbone.identity:
                if weights is not None:
                    raise InvalidInput(f"no trained channel ships for backbone {self.backbone.name!r}")
                return  # none ships for this backbone (or for this revision of it): untrained, nothing recorded
            self._load_channel(data, path)
            self._record_weights(SHIPPED, channel_digest(data), recorded)
            return
        path = Path(choice)
        try:
            data = path.read_bytes()
        except OSError as e:
            if weights is not None:
                raise InvalidInput(f"cannot read channel weights {path}: {e}") from e
            raise StoreMismatch(f"the store uses channel weights {path}, which cannot be read ({e}); "
                                "pass weights= to choose weights") from e
        digest = channel_digest(data)
        if weights is None and digest != recorded[1]:
            raise StoreMismatch(f"the channel weights file {path} changed since the store recorded it "
                                f"(sha256 {recorded[1][:12]}..., now {digest[:12]}...); pass weights= to use it")
        self._load_channel(data, path)
        self._record_weights(self.weights, digest, recorded)

    def _load_channel(self, data: bytes, path: Path) -> None:
        meta = load_channel(data, self.attention, self.backbone.identity)
        self.attention.eval()
        self._salient_tokens = int(meta.get("salient_tokens", self._salient_tokens))
        self._salient_order = meta.get("salient_order", self._salient_order)  # files before it: the store's
        if self._salient_order not in SALIENT_ORDERS:
            raise InvalidInput(f"channel weights {path} rank salient words by an unknown order {self._salient_order!r}")
        self.weights = str(path.resolve())

    def _record_weights(self, path: str, digest: str, recorded: tuple[str | None, str | None]) -> None:
        if (path, digest) != recorded:
            with self.store.write():
                self.store.set_meta("channel_path", path)
                self.store.set_meta("channel_sha256", digest)

    def _open_indexes(self) -> None:
        """Build the in-memory indexes at opening: from this user's snapshot, caught up through the
        history log, when a usable one is stored; else from the rows (`_load`)."""
        with _small_pages(), self.store.atomic():  # one consistent read of the file, even while others write
            if self._from_snapshot():
                return
            self._load(snapshot=True)

    def _from_snapshot(self) -> bool:
        """Load the stored snapshot and catch up from its event; False (nothing loaded) when there
        is none, or it is damaged, of another schema, or more than `SNAPSHOT_LAG` behind the log."""
        stored = self.store.snapshot(self.user_id)
        if stored is None:
            return False
        try:
            snap = unpack_snapshot(stored[1], stored[2])
        except SnapshotInvalid:
            return False
        keys = self.store.codec_keys()
        behind = self.store.events_count_since(self.user_id, snap.event)
        if (snap.event != stored[0] or snap.schema != self.store.schema_version or not snap.codec_keys <= keys
                or behind > SNAPSHOT_LAG * max(len(snap), SNAPSHOT_MIN_ROWS)):
            return False
        self._codec_keys = set()
        self._load_codecs(snap.codec_keys)
        if self._recoding(keys - snap.codec_keys):
            return False  # a codec set trained since re-coded the stored rows: read them
        try:
            content, context = (self._decoded_blocks(field, *snap.vectors[field]) for field in SNAPSHOT_FIELDS)
            self._reset()
            self._append({**snap.columns, "ts": snap.ts, "question": snap.question, "correction": snap.correction},
                         content, context, owned=True)
        except StoreCorrupted:  # consistent bytes that do not fit the store (codes of the wrong length)
            return False
        self._event, self._data_version = snap.event, None
        self._sync()  # what was written, changed, deleted or re-coded since the snapshot
        return True

    def _load(self, *, snapshot: bool = False) -> None:
        """Rebuild the in-memory indexes from the store's rows (decoded fields, this user only).
        With `snapshot`, a store of at least `SNAPSHOT_MIN_ROWS` keeps what was read for
        `_write_snapshot`."""
        with _small_pages():
            with self.store.atomic():  # one consistent read, even while other processes write
                self._data_version = self.store.data_version()
                self._event = self.store.last_event_id()
                self._codec_keys = set()
                self._load_codecs(self.store.codec_keys())
                rows = self.store.memory_columns(self.user_id, SNAPSHOT_FIELDS)
                vectors = {field: stored_blocks(field, *rows[field]) for field in SNAPSHOT_FIELDS}
                content, context = (self._decoded_blocks(field, *vectors[field]) for field in SNAPSHOT_FIELDS)
                schema = self.store.schema_version
            self._reset()
            self._append(rows, content, context, owned=True)
        if snapshot and len(self._ids) >= SNAPSHOT_MIN_ROWS:
            self._snapshot_due = Snapshot(
                event=self._event, schema=schema, codec_keys=set(self._codec_keys),
                columns={k: rows[k] for k in ("id", "session", "speaker")}, ts=self._ts.copy(),
                question=self._question.astype(bool), correction=self._correction.copy(), vectors=vectors)

    def _write_snapshot(self) -> None:
        """Store the snapshot `_load` kept, if any. It is a cache: opening does not wait more than
        `SNAPSHOT_WAIT_MS` for another writer's lock, nor fail when it cannot be stored (a full
        disk); the next open that reads the rows tries again."""
        snap, self._snapshot_due = self._snapshot_due, None
        if snap is None:
            return
        data = pack_snapshot(snap)
        try:
            with self.store.write(wait_ms=SNAPSHOT_WAIT_MS):
                self.store.put_snapshot(self.user_id, snap.event, data, len(snap))
        except (StoreBusy, sqlite3.Error):
            pass

    def _reset(self) -> None:
        """Empty in-memory indexes, ready for `_append`."""
        rc = self.config.retrieval
        tree = dict(exact_below=rc.exact_below, method=rc.index, rerank=rc.rerank, branching=rc.branching,
                    leaf_size=rc.leaf_size, beam=rc.beam, background=True)
        self._close_indexes()  # a reload: the old indexes' scan builds are of no more use
        self._index = {
            "temporal": BundleIndex(self.temporal.d_base, **tree),
            "topic": BundleIndex(self.topic.d_base, **tree),
            "context": BundleIndex(self.context.d_base, **tree),
        }
        self._ids, self._row_of, self._by_session = [], {}, {}
        self._speaker_of: dict[str, int] = {}  # speaker -> small int id
        self._speaker = np.zeros(0, dtype=np.int32)  # (rows,) speaker id, -1 for none
        # each row's content words and the live rows holding each word, for the informativeness
        # prior of dialogue turns, and the people each row names (`named_people`), for the people
        # channel: built from the stored texts on first need (`_word_stats`)
        self._words: list[frozenset[str]] | None = None
        self._df: Counter[str] | None = None
        self._people: list[frozenset[tuple[str, ...]]] | None = None
        self._holders: dict[int, frozenset[Holder]] = {}  # row -> whom it is about, read on first need
        self._question = np.zeros(0, dtype=np.float32)  # (rows,) 1 for a memory that is a question
        self._correction = np.zeros(0, dtype=bool)  # (rows,) the turn corrects its speaker (`is_correction`)
        self._corrected_by: dict[int, list[int]] = {}  # row -> the later turns that correct it, in order
        self._flat: tuple | None = None  # (topic index, its version, live rows, FAISS index) of flat mode
        self._ts = np.zeros(0)

    def _recoding(self, new_keys: set[tuple[str, int]]) -> bool:
        """Whether codec versions `new_keys`, written by another process, re-coded stored rows:
        a set's first version does, and so does its first PQ version (see `_store_fields`)."""
        stored = None
        for set_name, version in new_keys:
            s = self.registry.sets.get(set_name)
            if s is None:
                continue
            if not s.versions:
                return True
            if not any(c.pq_bytes for c in s.versions.values()):
                stored = stored or {(n, v): (k, d) for n, v, _, k, d in self.store.codecs()}
                if load_codec(*stored[(set_name, version)]).pq_bytes:
                    return True
        return False

    def _load_codecs(self, keys: set[tuple[str, int]]) -> None:
        for set_name, version, trained_at, kind, data in self.store.codecs():
            if (set_name, version) in keys and set_name in self.registry.sets:
                self.registry.load(set_name, version, trained_at, kind, data)
        self._codec_keys |= keys

    def _append(self, rows: dict[str, Any], content: np.ndarray, context: np.ndarray, *, owned: bool = False) -> None:
        """Add stored rows, in write order, given as columns (`Store.memory_columns`, or a
        snapshot's, which bring their question and correction flags instead of their texts), with
        their decoded content and context vectors (`owned`: decoded for this call, which may
        normalise them in place into the retrieval keys)."""
        if not rows["id"]:
            return
        start = len(self._ids)
        for i, session in enumerate(rows["session"]):
            if session is not None:
                self._by_session.setdefault(session, []).append(start + i)
        self._row_of.update(zip(rows["id"], range(start, start + len(rows["id"]))))
        self._ids += rows["id"]
        ts = np.array(rows["ts"], dtype=np.float64)
        self._ts = np.concatenate([self._ts, ts])
        spk = [-1 if s is None else self._speaker_of.setdefault(s, len(self._speaker_of)) for s in rows["speaker"]]
        self._speaker = np.concatenate([self._speaker, np.array(spk, dtype=np.int32)])
        if self._words is not None:  # built already: rows caught up from the log, which have texts
            words = [content_words(t) for t in rows["text"]]
            self._words += words
            self._people += [named_people(t) for t in rows["text"]]
            for w in words:
                self._df.update(w)
        if "question" in rows:
            questions, corrections = rows["question"], rows["correction"]
        else:
            questions = [is_question(t) for t in rows["text"]]
            corrections = [corrects(t, s is not None) for t, s in zip(rows["text"], rows["speaker"])]
        self._question = np.concatenate([self._question, np.asarray(questions, dtype=np.float32)])
        corrections = np.asarray(corrections, dtype=bool)
        self._correction = np.concatenate([self._correction, corrections])
        self._index["temporal"].add(self.temporal.encode(ts, now=0.0, access_count=np.zeros(len(ts))).dirn.numpy())
        self._index["topic"].add(self._keys(self.topic, content, owned), copy=False)
        self._index["context"].add(self._keys(self.context, context, owned), copy=False)
        for i in np.flatnonzero(corrections):  # once the rows are in the index, which says which are live
            self._link_correction(start + int(i), rows["session"][i])

    def _link_correction(self, row: int, session: str | None) -> None:
        """Record that dialogue turn `row`, a correction, corrects its speaker's latest statement
        (not a question) among the `CORRECTION_REACH` turns of its conversation before it."""
        if session is None or self._speaker[row] < 0:
            return
        turns, alive = self._by_session[session], self._index["topic"].alive
        live = (prev for prev in reversed(turns[: bisect.bisect_left(turns, row)]) if alive[prev])
        for prev in itertools.islice(live, CORRECTION_REACH):  # deleted turns count for nothing, as on reopen
            if self._speaker[prev] == self._speaker[row] and not self._question[prev]:
                later = self._corrected_by.setdefault(prev, [])
                if row not in later:
                    bisect.insort(later, row)
                return

    def _successor(self, rows: np.ndarray) -> np.ndarray:
        """For each row, the latest live turn that corrects it, or -1 (see `fuse`'s `successor`)."""
        alive = self._index["topic"].alive
        out = np.full(len(rows), -1, dtype=np.int64)
        for i, r in enumerate(rows.tolist()):
            for c in reversed(self._corrected_by.get(r, ())):
                if alive[c] and self._correction[c]:  # deleted, or updated into plain text: the one before
                    out[i] = c
                    break
        return out

    def _forget_row(self, row: int) -> None:
        self._holders.pop(row, None)
        for index in self._index.values():
            index.remove(row)
        if self._words is not None:
            self._df.subtract(self._words[row])
            self._words[row], self._people[row] = frozenset(), frozenset()

    def _set_text(self, row: int, text: str, session: str | None) -> None:
        """A row's text changed (an update): its words, holders, question flag and correction link follow."""
        self._holders.pop(row, None)
        if self._words is not None:
            self._df.subtract(self._words[row])
            self._words[row], self._people[row] = content_words(text), named_people(text)
            self._df.update(self._words[row])
        self._question[row] = float(is_question(text))
        was, self._correction[row] = self._correction[row], corrects(text, self._speaker[row] >= 0)
        if self._correction[row] and not was:  # now a correction: link it as a write would have
            self._link_correction(row, session)

    def _keys(self, bundle, x: np.ndarray, owned: bool) -> np.ndarray:
        """The topic or context bundle's retrieval keys (its `dirn`, the unit direction of each
        base point) for base points x (N, d_e). An `owned` x is normalised in place, by the same
        torch call the bundles make: at 10^5 rows a second (N, d_e) array is 154 MB, about 0.3 s
        of first-touch page faults in a fresh process."""
        if not (owned and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable):
            return self._dirn(bundle, x)
        t = torch.from_numpy(x)
        torch.nn.functional.normalize(t, dim=-1, out=t)
        return x

    @staticmethod
    def _dirn(bundle, x: np.ndarray) -> np.ndarray:
        return bundle.encode(torch.from_numpy(np.asarray(x, dtype=np.float32)), torch.zeros(len(x), 1)).dirn.numpy()

    def _sync(self) -> None:
        """Catch the in-memory index up with what other processes committed since it last looked.

        Cheap when nothing changed (one pragma). Another process's adds and deletes are applied
        from the history log; a retrained codec set (which re-codes stored rows) reloads all.
        Call it inside a transaction, so what it reads is the snapshot the caller then uses.
        """
        self.store.pin()
        version = self.store.data_version()
        if version == self._data_version:
            return
        keys = self.store.codec_keys()
        if keys != self._codec_keys:
            if self._recoding(keys - self._codec_keys):
                self._load()  # another process re-coded stored rows: read them all back
                return
            self._load_codecs(keys - self._codec_keys)  # later versions code only rows written after them
        events = self.store.events_since(self.user_id, self._event)
        self._data_version, self._event = version, self.store.last_event_id()
        gone = {m for _, m, e in events if e == "DELETE"}
        changed = {m for _, m, e in events if e == "UPDATE"} - gone
        new = [m for _, m, e in events if e == "ADD" and m not in self._row_of and m not in gone]
        for m in gone:
            if m in self._row_of and self._index["topic"].alive[self._row_of[m]]:
                self._forget_row(self._row_of[m])
        if new:
            rows = _columns(self.store.memory_rows_by_id(self.user_id, new))
            self._append(rows, self._fetch(rows["id"], "content"), self._fetch(rows["id"], "context"))
        changed = [m for m in changed if m in self._row_of]
        if changed:
            for r in self.store.memory_rows_by_id(self.user_id, changed):
                self._set_text(self._row_of[r["id"]], r["text"], r["session"])
            for bundle, field in ((self.topic, "content"), (self.context, "context")):
                for m, x in zip(changed, self._dirn(bundle, self._fetch(changed, field))):
                    self._index[bundle.name].replace(self._row_of[m], x)

    def _decoded(self, items: list[tuple[str, int, np.ndarray]], field: str) -> np.ndarray:
        """Stack (memory_id, version, data) rows into decoded vectors, one batch per codec version."""
        versions = np.fromiter((v for _, v, _ in items), dtype=np.int64, count=len(items))
        blocks = {v: stacked([items[i][2] for i in np.flatnonzero(versions == v)], field, v)
                  for v in np.unique(versions).tolist()}
        return self._decoded_blocks(field, versions, blocks)

    def _decoded_blocks(self, field: str, versions: np.ndarray, blocks: dict[int, np.ndarray]) -> np.ndarray:
        """The decoded `field` vectors (N, d) of rows given as their codec versions (N,) and each
        version's rows (`ams.snapshot.stored_blocks`), in a new array. A version whose rows are
        consecutive (all of them, but for rows another version re-coded) is decoded straight into
        its part of the result: a 10^5-row temporary is 154 MB of fresh pages."""
        if not len(versions):
            return np.zeros((0, 0), dtype=np.float32)
        groups = np.unique(versions).tolist()
        widths = {v: blocks[v].shape[1] if v == 0 else self._codec(field, v).d for v in groups}
        if len(set(widths.values())) > 1:
            raise StoreCorrupted(f"vectors of {field!r} differ in width between codec versions")
        out = np.empty((len(versions), widths[groups[0]]), dtype=np.float32)
        for v in groups:
            idx = np.flatnonzero(versions == v)
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            if v == 0:
                out[idx] = blocks[0]
            elif hi - lo == len(idx):
                self._decode(field, v, blocks[v], out=out[lo:hi])
            else:
                out[idx] = self._decode(field, v, blocks[v])
        return out

    def _codec(self, field: str, version: int):
        set_name = self.registry.set_of(field)
        if version not in self.registry.sets[set_name].versions:
            raise StoreCorrupted(f"vectors of {field!r} name codec version {version} that the store lacks")
        return self.registry.codec(set_name, version)

    def _decode(self, field: str, version: int, codes: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one codec version's codes (n, code_size) of `field`, into `out` when given."""
        codec = self._codec(field, version)
        if codes.ndim != 2 or codes.shape[1] != codec.code_size:
            raise StoreCorrupted(f"vectors of {field!r} have codes of the wrong length for codec version {version}")
        return codec.decode(codes, out=out)

    # -- writing --------------------------------------------------------------------------------
    def write(self, text: str, *, ts: float | _dt.datetime | None = None, session: str | None = None,
              role: str = "user", speaker: str | None = None, meta: Mapping[str, Any] | None = None) -> str:
        """Store one memory in one transaction.

        Args:
            text: what to remember; at most `max_memory_tokens` backbone tokens.
            ts: when it was said: unix seconds or a datetime (naive means local time); default now.
            session: the conversation it belongs to; the context bundle reads its earlier turns.
            role: "user", "assistant" or "system".
            speaker: who said it ("Ana"), for dialogue: retrieval prefers a speaker's turns when a
                question names them, and shows the turn as "Ana: text".
            meta: JSON-serialisable extra data, returned as stored.

        Returns:
            The new memory's id.

        Raises:
            EmptyText, TextTooLong, InvalidInput: the input is rejected and nothing is written.
        """
        return self.write_many([{"text": text, "ts": ts, "session": session, "role": role, "speaker": speaker,
                                 "meta": meta}])[0]

    @_guarded
    def write_many(self, items: Iterable[str | Mapping[str, Any]]) -> list[str]:
        """Store many memories in one transaction: all of them, or none on any error.

        Args:
            items: texts, or mappings with `text` and optionally `ts`, `session`, `role`, `speaker`, `meta`.

        Returns:
            The new ids, in order.

        Raises:
            EmptyText, TextTooLong, InvalidInput: some item is rejected; nothing is written.
        """
        self._check_open()
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise InvalidInput("write_many takes an iterable of texts or mappings")
        rows = [self._validate_item(it, i) for i, it in enumerate(items)]
        if not rows:
            return []
        texts = [r["text"] for r in rows]
        content = self.embedder.encode(texts).numpy()  # (N, d_e)
        enc = self.backbone.encode(texts)
        trained_before = {s: set(c.versions) for s, c in self.registry.sets.items()}
        try:
            with self.store.write():  # the write lock first: sessions and codec sets read as they stand
                self._sync()
                fields = {"content": content, "context": self._context_points(rows, content),
                          "salient": enc.salient.numpy(), "hidden": enc.hidden.numpy()}
                for r in rows:
                    self.store.insert_memory(r)
                recoded, stored = self._store_fields([r["id"] for r in rows], fields)
                event = self.store.last_event_id()
        except BaseException:
            for s, versions in trained_before.items():  # forget codecs the rollback removed
                for v in set(self.registry.sets[s].versions) - versions:
                    del self.registry.sets[s].versions[v], self.registry.sets[s].trained_at[v]
            raise
        self._codec_keys = {(name, v) for name, c in self.registry.sets.items() for v in c.versions}
        if recoded:
            self._load()  # stored rows were re-coded: read back what inference must use, the decoded fields
        else:
            self._append(_columns(rows), stored["content"], stored["context"])
            self._event = event
        return [r["id"] for r in rows]

    def add_messages(self, messages: Iterable[Mapping[str, Any]], *, session: str | None = None,
                     ts: float | _dt.datetime | None = None) -> list[str]:
        """Remember a conversation: chat-format messages, one memory per turn, in one transaction.

        Args:
            messages: `{"role": "user" | "assistant" | "system", "content": str, "name": optional
                speaker}`; `content` may also be a list of parts, whose `{"type": "text"}` parts are
                joined. The speaker is `name`, else the role. A message may carry its own `ts` and
                `session` (a transcript of several conversations).
            session: the conversation's id; None starts a new one (a fresh id), so the turns are
                read in each other's context.
            ts: when the conversation happened (unix seconds or a datetime; default now); a
                message's own `ts` wins.

        Returns:
            The new memory ids, one per message, in order.

        Raises:
            EmptyText, TextTooLong, InvalidInput: a message is rejected (its index is named) and
                nothing is written.
        """
        self._check_open()
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
            raise InvalidInput("add_messages takes a list of chat messages ({'role': ..., 'content': ...})")
        if session is not None and not isinstance(session, str):
            raise InvalidInput("session must be a string or None")
        session = session if session is not None else f"conv-{uuid.uuid4().hex[:12]}"
        base_ts = _to_unix(ts, time.time())
        items = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise InvalidInput(f"message {i}: expected a mapping, got {type(m).__name__}")
            unknown = set(m) - {"role", "content", "name", "ts", "session"}
            if unknown:
                raise InvalidInput(f"message {i}: unknown keys {sorted(unknown)}")
            role = m.get("role")
            if role not in ROLES:
                raise InvalidInput(f"message {i}: role must be one of {ROLES}, got {role!r}")
            name = m.get("name")
            items.append({"text": _message_text(m.get("content"), i), "role": role,
                          "session": session if m.get("session") is None else m["session"],
                          "speaker": role if name is None else name,
                          "ts": base_ts if m.get("ts") is None else m["ts"]})
        return self.write_many(items)

    def _put_fields(self, ids: list[str], fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Write each field of memories `ids`, coded by its set's newest codec (raw while untrained);
        returns field -> the vectors as stored, decoded: what the in-memory index must hold."""
        stored = {}
        for name, x in fields.items():
            coded = self.registry.encode(name, x)
            for i, mid in enumerate(ids):
                if coded is None:
                    self.store.put_vector(mid, name, 0, x[i].astype(np.float32))
                else:
                    self.store.put_vector(mid, name, coded[0], coded[1][i])
            stored[name] = x if coded is None else self.registry.decode(name, coded[0], coded[1])
        return stored

    def _store_fields(self, ids: list[str], fields: dict[str, np.ndarray]) -> tuple[bool, dict[str, np.ndarray]]:
        """Write each field raw or coded, then train the codec sets that are due.

        Returns:
            (whether stored rows were re-coded: on a set's first codec and its first PQ codec;
             field -> the vectors as stored, decoded)
        """
        stored = self._put_fields(ids, fields)
        recoded = False
        for set_name, codec_set in self.registry.sets.items():
            n = self.store.memories_written() * len(codec_set.spec.fields)
            if not self.registry.due(set_name, n):
                continue
            before = dict(codec_set.versions)
            xt, held = self._training_vectors(codec_set.spec.fields)
            version = self.registry.train(set_name, xt, seed=self.config.prefix.seed, n_vectors=held)
            codec = self.registry.codec(set_name, version)
            self.store.put_codec(set_name, version, codec_set.trained_at[version], codec.kind, codec.to_bytes())
            # Rows to re-code: the raw ones on a set's first training, and the dense-residual ones on its
            # first PQ version, so a large store keeps no d + 8 byte codes (int8 decodes within ~1%, so
            # coding its output again adds nothing measurable). Otherwise no row is coded twice.
            stale = {0} if not before else set()
            if codec.pq_bytes and not any(c.pq_bytes for c in before.values()):
                stale |= set(before)
            for f in codec_set.spec.fields:
                for old in sorted(stale):
                    rows = self.store.vectors(None, f, version=old)
                    if rows:
                        codes = codec.encode(self._decoded(rows, f))
                        for (mid, _, _), code in zip(rows, codes):
                            self.store.put_vector(mid, f, version, code)
                        recoded = True
        return recoded, stored

    def _training_vectors(self, fields: tuple[str, ...]) -> tuple[np.ndarray, int]:
        """What a codec set's next version trains on, decoded, and how many vectors the set holds
        (every user's): all of its fields' stored vectors while they number at most `max_train`,
        else those of a seeded sample of memories, looked up by write order. A retrain then reads
        about `max_train` vectors however large the store: reading all of them held the write lock
        4.6 s and took 615 MB for the 2 x 10^5 sentence vectors of a 10^5 store
        (benchmarks/retrain.py)."""
        alive = self.store.count()
        held, limit = alive * len(fields), self.registry.cfg.max_train
        seqs = None
        if held > limit:  # seqs run 1..written, deleted memories' missing: draw enough to find `limit`
            written = self.store.memories_written()
            draw = min(written, math.ceil(limit / len(fields) * written / alive))
            seqs = np.sort(np.random.default_rng(self.config.prefix.seed).choice(written, draw, replace=False)) + 1
        parts = []
        for f in fields:
            _, versions, data = self.store.vector_columns(None, f, seqs=None if seqs is None else seqs.tolist())
            parts.append(self._decoded_blocks(f, *stored_blocks(f, versions, data)))
        return np.concatenate(parts), held

    def _validate_item(self, item: str | Mapping[str, Any], i: int) -> dict:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, Mapping):
            raise InvalidInput(f"item {i}: expected a text or a mapping, got {type(item).__name__}")
        unknown = set(item) - {"text", "ts", "session", "role", "speaker", "meta", "id", "type", "user_id"}
        if unknown:
            raise InvalidInput(f"item {i}: unknown keys {sorted(unknown)}")
        text = self._validate_text(item.get("text"))
        role = item.get("role") or "user"
        if role not in ROLES:
            raise InvalidInput(f"item {i}: role must be one of {ROLES}, got {role!r}")
        session = item.get("session")
        if session is not None and not isinstance(session, str):
            raise InvalidInput(f"item {i}: session must be a string or None")
        if session is not None:
            _check_encodable(session, f"item {i}: session")
        speaker = item.get("speaker")
        if speaker is not None:
            if not isinstance(speaker, str) or not speaker.strip():
                raise InvalidInput(f"item {i}: speaker must be a non-empty string or None")
            if len(speaker) > MAX_SPEAKER_CHARS:
                raise InvalidInput(f"item {i}: speaker is longer than {MAX_SPEAKER_CHARS} characters")
            _check_encodable(speaker, f"item {i}: speaker")
            speaker = speaker.strip()
        meta = item.get("meta")
        if meta is not None:
            if not isinstance(meta, Mapping):
                raise InvalidInput(f"item {i}: meta must be a mapping")
            try:
                meta = json.loads(json.dumps(dict(meta)))
            except (TypeError, ValueError) as e:
                raise InvalidInput(f"item {i}: meta is not JSON-serialisable: {e}") from e
        now = time.time()
        return {"id": uuid.uuid4().hex, "user_id": self.user_id, "text": text, "ts": _to_unix(item.get("ts"), now),
                "session": session, "role": role, "speaker": speaker, "meta": meta, "created_at": now, "updated_at": now}

    @property
    def max_memory_tokens(self) -> int:
        """Longest memory accepted, in backbone tokens: half the prompt budget, so a memory and a
        question always fit in the prompt together."""
        return min(self.backbone.max_context, self.config.max_context_tokens) // 2

    def _validate_text(self, text: Any, what: str = "text") -> str:
        if not isinstance(text, str):
            raise InvalidInput(f"{what} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise EmptyText(f"{what} is empty")
        _check_encodable(text, what)
        n = self.backbone.count_tokens(text)
        if n > self.max_memory_tokens:
            raise TextTooLong(f"{what} has {n} backbone tokens; the limit is {self.max_memory_tokens} "
                              "(half the prompt budget). Split it into several memories.")
        return text

    def _context_points(self, rows: list[dict], content: np.ndarray) -> np.ndarray:
        """Each new memory's context point from its session's earlier turns (stored, then this batch).

        A dialogue turn (one with a speaker, in a session) is encoded with the text of the
        `context_turns` turns before it: "she's called Mochi" is read after "what did you name the
        puppy?", and a correction after what it corrects. Other memories mix vectors (`_mix`).
        """
        m = self.config.context_turns
        out = np.zeros_like(content)
        batch_seen: dict[str | None, list[np.ndarray]] = {}
        lines: dict[str, list[str]] = {}  # session -> its turns' lines so far (stored, then this batch)
        windows: dict[int, str] = {}
        for i, r in enumerate(rows):
            earlier = self._session_contents(r["session"]) + batch_seen.get(r["session"], [])
            if r["session"] is not None:
                batch_seen.setdefault(r["session"], []).append(content[i])
            out[i] = self._mix(content[i], earlier, m)
            if r["session"] is not None and m:
                if r["session"] not in lines:
                    lines[r["session"]] = [turn_line(t) for t in self.store.session_turns(
                        self.user_id, r["session"], 2**62, m, 0)]
                if r["speaker"] is not None:
                    windows[i] = turn_window(lines[r["session"]], r, m)
                lines[r["session"]].append(turn_line(r))
        if windows:
            for i, v in zip(windows, self.embedder.encode(list(windows.values())).numpy()):
                out[i] = v
        return out

    def _session_contents(self, session: str | None, before: int | None = None) -> list[np.ndarray]:
        """The topic vectors of a session's live turns, in write order (those before row `before`)."""
        if session is None:
            return []
        topic = self._index["topic"]
        return [topic.x[i] for i in self._by_session.get(session, ())
                if topic.alive[i] and (before is None or i < before)]

    @staticmethod
    def _mix(own: np.ndarray, earlier: list[np.ndarray], m: int) -> np.ndarray:
        prev = np.mean(earlier[-m:], axis=0) if earlier and m else np.zeros_like(own)
        summary = np.mean(earlier, axis=0) if earlier else np.zeros_like(own)
        t = context_point(torch.from_numpy(own[None]), torch.from_numpy(prev[None]).float(),
                          torch.from_numpy(summary[None]).float())
        return t[0].numpy()

    # -- reading --------------------------------------------------------------------------------
    @_guarded
    def get(self, memory_id: str) -> MemoryRecord:
        """One memory by id.

        Raises:
            MemoryNotFound: no such memory for this user.
        """
        self._check_open()
        row = self.store.memory_row(self.user_id, self._validate_id(memory_id))
        if row is None:
            raise MemoryNotFound(f"no memory {memory_id!r} for user {self.user_id!r}")
        return _record(row)

    @_guarded
    def get_all(self, *, limit: int = 100, offset: int = 0) -> list[MemoryRecord]:
        """This user's memories in write order.

        Args:
            limit: most records to return (-1 for all).
            offset: records to skip.
        """
        self._check_open()
        if not isinstance(limit, int) or not isinstance(offset, int) or limit < -1 or offset < 0:
            raise InvalidInput("limit must be an int >= -1 and offset an int >= 0")
        return [_record(r) for r in self.store.memory_rows(self.user_id, limit=limit, offset=offset)]

    @_guarded
    def history(self, memory_id: str) -> list[dict]:
        """The ADD / UPDATE / DELETE events of a memory, oldest first (kept after a delete).

        Raises:
            MemoryNotFound: the id never existed for this user.
        """
        self._check_open()
        events = self.store.history(self.user_id, self._validate_id(memory_id))
        if not events:
            raise MemoryNotFound(f"no memory {memory_id!r} for user {self.user_id!r}")
        return events

    @_guarded
    def __len__(self) -> int:
        """This user's memories, counting what other processes have written to the store."""
        self._check_open()
        with self.store.atomic():
            self._sync()
        return len(self._index["topic"])

    # -- changing -------------------------------------------------------------------------------
    @_guarded
    def update(self, memory_id: str, text: str) -> None:
        """Replace a memory's text and re-encode it; its id, time and session stay.

        Raises:
            MemoryNotFound, EmptyText, TextTooLong, InvalidInput: nothing is changed.
        """
        self._check_open()
        memory_id = self._validate_id(memory_id)
        text = self._validate_text(text)
        content = self.embedder.encode([text]).numpy()
        enc = self.backbone.encode([text])
        with self.store.write():  # checked under the lock: another process may have deleted it
            self._sync()
            row = self.get(memory_id)
            i = self._row_of[row.id]
            m = self.config.context_turns
            if row.speaker is not None and row.session is not None and m:  # see `_context_points`
                seq = self.store.memory_row(self.user_id, row.id)["seq"]
                before = [turn_line(t) for t in self.store.session_turns(self.user_id, row.session, seq, m, 0)]
                window = turn_window(before, {"text": text, "speaker": row.speaker}, m)
                context = self.embedder.encode([window]).numpy()
            else:
                context = self._mix(content[0], self._session_contents(row.session, before=i), m)[None]
            fields = {"content": content, "context": context, "salient": enc.salient.numpy(),
                      "hidden": enc.hidden.numpy()}
            self.store.update_text(self.user_id, row.id, text, time.time())
            stored = self._put_fields([row.id], fields)
            event = self.store.last_event_id()
        self._set_text(i, text, row.session)
        self._index["topic"].replace(i, self._dirn(self.topic, stored["content"])[0])
        self._index["context"].replace(i, self._dirn(self.context, stored["context"])[0])
        self._event = event

    @_guarded
    def delete(self, memory_id: str) -> None:
        """Delete a memory of this user; it never comes back in search or generate.

        Raises:
            MemoryNotFound: no such memory for this user.
        """
        self._check_open()
        memory_id = self._validate_id(memory_id)
        with self.store.write():
            self._sync()
            self.get(memory_id)  # raises MemoryNotFound
            self.store.delete_memory(self.user_id, memory_id, time.time())
            event = self.store.last_event_id()
        self._forget_row(self._row_of[memory_id])
        self._event = event

    # -- retrieval ------------------------------------------------------------------------------
    @_guarded
    def search(self, query: str, *, k: int = 5, session: str | None = None, method: str = "ams",
               now: float | _dt.datetime | None = None) -> list[Hit]:
        """The k memories that best fit `query`.

        Args:
            query: the question or cue.
            k: how many memories to return.
            session: the asking conversation; its earlier turns shape the context bundle's query.
            method: "ams" (tree-filtered retrieval fused over the bundles) or "flat" (FAISS exact
                cosine on the topic vectors alone, what `flat` mode uses).
            now: when the question is asked (unix seconds or a datetime; default the clock): the
                temporal bundle's query point. Pass it to make results independent of the clock.

        Returns:
            Hits, best first, each with its score and, for "ams", the per-bundle scores.
        """
        self._check_open()
        query = self._validate_query(query)
        k = _positive_int(k, "k")
        if method not in ("ams", "flat"):
            raise InvalidInput(f"method must be 'ams' or 'flat', got {method!r}")
        now = _to_unix(now, time.time(), "now")
        with self.store.atomic():  # one snapshot: every hit is a whole, live memory
            self._sync()
            named = self._named_speakers(query)
            points = self._query_points(query, session, now, named)
            if method == "flat":
                rows = self._retrieve_flat(points, k)
                return [self._hit(r, float(self._index["topic"].x[r] @ points["topic"]), {}) for r in rows]
            rows, fused, per = self._retrieve(points, k, query, now, named)
            return [self._hit(r, fused[i], {b: float(per[b][i]) for b in per}) for i, r in enumerate(rows)]

    def _query_points(self, query: str, session: str | None, now: float,
                      named: dict[str, str] | None = None) -> dict[str, np.ndarray]:
        """The question's point on each bundle. A question that names a speaker is asked of that
        speaker's own words: "Where does Ana live?" is encoded as "Where does I live?", since Ana's
        turns say "I live in ..." and the speaker channel already prefers Ana's turns.

        Args:
            named: `_named_speakers(query)`, when the caller has it already.
        """
        named = self._named_speakers(query) if named is None else named
        words = sorted(set(named.values()), key=len, reverse=True)  # "Ana Silva" before "Ana"
        for name in words if self.config.retrieval.speaker_rewrite else ():
            query = re.sub(rf"(?<!\w){re.escape(name)}'s(?!\w)", "my", query, flags=re.IGNORECASE)
            query = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "I", query, flags=re.IGNORECASE)
        content = self.embedder.encode([query]).numpy()[0]
        ctx = self._mix(content, self._session_contents(session), self.config.context_turns)
        return {"topic": self.topic.query(torch.from_numpy(content)).numpy(),
                "context": self.context.query(torch.from_numpy(ctx)).numpy(),
                "temporal": self.temporal.query(now).numpy()}

    def _retrieve(self, points: dict[str, np.ndarray], k: int, query: str, now: float, named: dict[str, str]):
        """Top-k rows by the bundles' fused scores plus the channels scored outside them: lexical,
        speaker, recency, the question penalty, and for dialogue turns specificity, people and turn context
        (the context bundle's score once more; see `RetrievalConfig.turn_context_weight`)."""
        n = len(self._index["topic"])
        if n == 0:
            return [], np.zeros(0), {b: np.zeros(0) for b in BUNDLES}
        rc = self.config.retrieval.for_store(bool(self._speaker_of))
        weights = {"topic": rc.topic_weight, "context": rc.context_weight, "temporal": rc.temporal_weight}
        candidates = max(rc.candidates, k)
        extra, propose = {}, None
        if rc.lexical_weight > 0:
            lexical, propose = self._lexical(query, candidates, named)
            extra["lexical"] = (lexical, rc.lexical_weight)
        # the channels below are scored on the candidate pool only: O(pool), not O(store)
        if self._speaker_of:
            ids = [self._speaker_of[sp] for sp in named]
            extra["speaker"] = (lambda rows: np.isin(self._speaker[rows], ids), rc.speaker_weight)
        half_life = self.config.temporal.recency_half_life_days
        extra["recency"] = (lambda rows: 0.5 ** (np.maximum(now - self._ts[rows], 0.0) / 86400.0 / half_life),
                            rc.recency_weight)
        if self._speaker_of:  # channels for dialogue turns (memories with a speaker)
            extra["informative"] = (lambda rows: self._informative(rows) * (self._speaker[rows] >= 0),
                                    rc.informative_weight)
            context, q = self._index["context"], points["context"]
            extra["turn context"] = (lambda rows: context.scores(q, rows) * (self._speaker[rows] >= 0),
                                     rc.turn_context_weight)
            if rc.people_weight > 0:
                asked = self._asked_about(query, named)
                extra["people"] = (lambda rows: self._about(rows, asked) * (self._speaker[rows] >= 0),
                                   rc.people_weight)
        if rc.holder_weight > 0:
            whose = holders(query, question=True)
            extra["holder"] = (lambda rows: -self._about_others(rows, whose), rc.holder_weight)
        extra["question"] = (lambda rows: -self._question[rows], rc.question_penalty)
        successor = self._successor if rc.supersede_corrections and self._corrected_by else None
        fused, rows, per = fuse(self._index, points, weights, k=min(k, n), candidates=candidates,
                                extra=extra, propose=propose, successor=successor)
        return rows.tolist(), fused, per

    def _lexical(self, query: str, limit: int, named: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """BM25 of every row for the query's content words (0 where nothing matched), scaled so the
        best match scores 1, and the rows that matched, best first. Names of speakers are left to
        the speaker channel."""
        names = {w for n in named.values() for w in content_words(n, 1)}
        terms = [w for w in dict.fromkeys(re.findall(r"[^\W_]+", fold(query)))
                 if len(w) > 1 and w not in STOPWORDS and w not in names]
        scores = np.zeros(len(self._ids), dtype=np.float32)
        hits = [(self._row_of[m], s) for m, s in self.store.lexical(self.user_id, terms, limit) if m in self._row_of]
        if not hits:
            return scores, np.zeros(0, dtype=np.int64)
        rows = np.array([r for r, _ in hits], dtype=np.int64)
        s = np.array([s for _, s in hits], dtype=np.float32)
        scores[rows] = s / max(float(s.max()), 1e-9)
        return scores, rows

    def _named_speakers(self, query: str) -> dict[str, str]:
        """This user's speakers that the query names -> the words it names them by: the whole
        name, or its first word ("Ana" for "Ana Silva"). Roles used as speakers ("user") are not names."""
        q = fold(query)
        out = {}
        for sp in self._speaker_of:
            if sp in ROLES:
                continue
            for w in (sp, sp.split()[0]):
                if len(w) > 1 and re.search(rf"(?<!\w){re.escape(fold(w))}(?!\w)", q):
                    out[sp] = w
                    break
        return out

    @staticmethod
    def _asked_about(query: str, named: dict[str, str]) -> frozenset[str]:
        """The name words of whoever the query asks about: its speakers' whole names, and every
        capitalised word after the first ("Where does Gustav Garcia live?" asks about "gustav" and
        "garcia")."""
        words = {w for sp in named for w in content_words(sp, 1)}
        words.update(fold(m.group(1)) for m in NAME_WORD.finditer(query)
                     if m.start() > 0 and m.group(1)[0].isupper())
        return frozenset(words) - STOPWORDS

    def _about(self, rows: np.ndarray, asked: frozenset[str]) -> np.ndarray:
        """+1 for a row that names someone the query asks about, -1 for one that names only other
        people, 0 for one that names no one. "I heard that Gustav Garcia's car is a Mazda", said
        by Ana, is about Gustav, not about Ana's car."""
        self._word_stats()
        out = np.zeros(len(rows), dtype=np.float32)
        for i, r in enumerate(rows):
            people = self._people[r]
            if people:
                out[i] = 1.0 if any(asked.intersection(p) for p in people) else -1.0
        return out

    def _about_others(self, rows: np.ndarray, asked: frozenset[Holder]) -> np.ndarray:
        """1 for each row written as a fact (no speaker) about people none of whom the question asks
        about (`turns.about_others`), else 0. Each row's holders are read from its stored text the
        first time a question's pool holds it."""
        out = np.zeros(len(rows), dtype=np.float32)
        if not asked:
            return out
        facts = [int(r) for r in rows if self._speaker[r] < 0]
        unread = [self._ids[r] for r in facts if r not in self._holders]
        for row in self.store.memory_rows_by_id(self.user_id, unread) if unread else ():
            self._holders[self._row_of[row["id"]]] = holders(row["text"])
        for i, r in enumerate(rows.tolist()):
            out[i] = float(about_others(self._holders.get(r, frozenset()), asked))
        return out

    def _informative(self, rows: np.ndarray) -> np.ndarray:
        """How specific each row is: the largest IDF of its words over this user's memories, scaled
        to [0, 1]. A turn that holds a fact names something rare (a place, a name, a breed); small
        talk ("the gym was packed today") does not. Applied to dialogue turns only: a memory
        written as a fact is one whatever its words, and near-duplicate facts would be ranked by
        their rarest word rather than by the question."""
        words, df = self._word_stats()
        n = max(len(self._index["topic"]), 2)
        out = np.zeros(len(rows), dtype=np.float32)
        for i, r in enumerate(rows):
            dfs = [df[w] for w in words[r]]
            if dfs:
                out[i] = math.log(n / max(min(dfs), 1)) / math.log(n)
        return np.clip(out, 0.0, 1.0)

    def _word_stats(self) -> tuple[list[frozenset[str]], Counter[str]]:
        """Each row's content words and every word's count over live rows (and each row's named
        people, `self._people`), read from the stored texts the first time a dialogue question
        needs them (a fact store never does, and its reopen skips the 10^5 regex passes). Call
        inside the transaction that synced the index."""
        if self._words is None:
            words, people = [frozenset()] * len(self._ids), [frozenset()] * len(self._ids)
            df: Counter[str] = Counter()
            for r in self.store.memory_rows(self.user_id):
                row = self._row_of.get(r["id"])
                if row is not None and self._index["topic"].alive[row]:
                    words[row], people[row] = content_words(r["text"]), named_people(r["text"])
                    df.update(words[row])
            self._words, self._df, self._people = words, df, people
        return self._words, self._df

    def _retrieve_flat(self, points: dict[str, np.ndarray], k: int) -> list[int]:
        topic = self._index["topic"]
        if self._flat is None or self._flat[0] is not topic or self._flat[1] != topic.version:
            alive = np.flatnonzero(topic.alive)  # the FAISS index is rebuilt only when the rows changed
            self._flat = (topic, topic.version, alive, FlatIndex(topic.x[alive]))
        _, _, alive, flat = self._flat
        if not len(alive):
            return []
        _, idx = flat.search(points["topic"], min(k, len(alive)))
        return alive[idx[0]].tolist()

    def _hit(self, row: int, score: float, scores: dict[str, float]) -> Hit:
        rec = self.store.memory_row(self.user_id, self._ids[row])
        return Hit(id=rec["id"], text=rec["text"], score=float(score), ts=rec["ts"], scores=scores,
                   session=rec["session"], role=rec["role"], speaker=rec["speaker"])

    # -- generation -----------------------------------------------------------------------------
    @property
    def default_mode(self) -> str:
        """The mode `generate` uses when given none: "hybrid" once a trained memory channel is loaded
        (the shipped one, or `weights=`), "text" with the untrained one, whose prefix answered below
        text mode or level with it on every benchmark but the 10-fact seed session (BENCHMARKS.md,
        "The default mode"). A store that holds dialogue turns also answers in "text": the channel
        is trained on facts, and on chat transcripts its `hybrid` answered below `text`
        (BENCHMARKS.md, "Conversations")."""
        return "hybrid" if self.weights and not self._speaker_of else "text"

    def generate(self, query: str, *, mode: str | None = None, k: int = 3, max_new_tokens: int = 64,
                 session: str | None = None, memory_ids: list[str] | None = None,
                 now: float | _dt.datetime | None = None) -> Generation:
        """Answer `query` with the backbone, its memory injected as `mode` says.

        Args:
            query: the user's question.
            mode: "full" (every memory in the prompt), "prefix" (prefix embeddings only), "flat"
                (top-k by FAISS exact cosine, as text), "text" (top-k by AMS retrieval, as text),
                "hybrid" (AMS text and prefix), or "none". None takes `default_mode`.
            k: memories retrieved (all modes but full and none). The prompt leaves out those
                scoring below `relative_gate` times the best (`dialogue_relative_gate`, by default the
                best alone, in a store that holds dialogue turns).
            max_new_tokens: the most tokens generated (greedy).
            session: the asking conversation (shapes retrieval's context query).
            memory_ids: use exactly these memories (in this order) instead of retrieving; for
                `text`, `flat`, `hybrid` and `prefix` modes (an "oracle" run passes the gold ones).
            now: when the question is asked (default the clock); see `search`.

        Returns:
            A `Generation` with the text, the memories used and timings.

        Raises:
            UnknownMode, EmptyText, InvalidInput: bad arguments.
        """
        return self.generate_many([query], mode=mode, k=k, max_new_tokens=max_new_tokens, session=session,
                                  memory_ids=None if memory_ids is None else [memory_ids], now=now)[0]

    @_guarded
    def generate_many(self, queries: list[str], *, mode: str | None = None, k: int = 3, max_new_tokens: int = 64,
                      session: str | None = None, memory_ids: list[list[str]] | None = None,
                      batch_size: int = 8, now: float | _dt.datetime | None = None) -> list[Generation]:
        """Answer several questions, generating `batch_size` of them at a time in one batch.

        Each answer is the one `generate` gives for its question up to float rounding in the
        padded batch (greedy decoding; tested equal on the shipped model). All questions are
        retrieved before any is answered, so an answer's prefix does not see the access counts
        that the batch's earlier questions add.

        Args:
            queries: the questions.
            mode, k, max_new_tokens, session, now: as for `generate`, shared by every question.
            memory_ids: one list of memory ids per question, used instead of retrieving.
            batch_size: questions generated together; 1 answers them one by one.

        Returns:
            One `Generation` per question, in order. Its `generate_ms` is its batch's time divided
            by the batch's size, and `batch` says how many questions shared it.

        Raises:
            UnknownMode, EmptyText, InvalidInput: bad arguments (checked before any work).
        """
        self._check_open()
        mode = self.default_mode if mode is None else mode
        if mode not in MODES:
            raise UnknownMode(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(queries, str) or not isinstance(queries, (list, tuple)):
            raise InvalidInput("queries must be a list of strings")
        queries = [self._validate_query(q) for q in queries]
        k, max_new_tokens = _positive_int(k, "k"), _positive_int(max_new_tokens, "max_new_tokens")
        batch_size = _positive_int(batch_size, "batch_size")
        now = _to_unix(now, time.time(), "now")
        if memory_ids is not None:
            if mode in ("full", "none"):
                raise InvalidInput(f"memory_ids has no effect in {mode!r} mode")
            if len(memory_ids) != len(queries):
                raise InvalidInput(f"{len(queries)} queries but {len(memory_ids)} memory_ids lists")
        with self.store.atomic():  # one snapshot for every question's retrieval and memory texts
            self._sync()
            if memory_ids is not None:
                chosen = [[self._row_of[self.get(m).id] for m in ids] for ids in memory_ids]
            plans = [self._plan(q, mode, k, max_new_tokens, session, None if memory_ids is None else chosen[i], now)
                     for i, q in enumerate(queries)]
        out: list[Generation] = []
        for i in range(0, len(plans), batch_size):
            batch = plans[i : i + batch_size]
            t0 = time.perf_counter()
            timed = any(p.times is not None for p in batch)
            texts = self.backbone.generate_batch([p.ids for p in batch], prefixes=[p.prefix for p in batch],
                                                 max_new_tokens=max_new_tokens,
                                                 times=[p.times for p in batch] if timed else None)
            generate_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            used = [r for p in batch for r in p.rows]  # a memory two questions used counts twice
            if used:
                try:
                    with self.store.write():
                        self.store.touch(self.user_id, [self._ids[r] for r in used], time.time())
                except StoreBusy:  # access counts are best effort: an answer is not lost for one
                    pass
            for p, text in zip(batch, texts):
                slots = 0 if p.prefix is None else int(p.prefix.shape[0])
                out.append(Generation(text=text, mode=mode, memory_ids=[self._ids[r] for r in p.rows],
                                      in_tokens=len(p.ids) + slots, prefix_slots=slots, retrieve_ms=p.retrieve_ms,
                                      generate_ms=generate_ms, truncated=p.truncated, batch=len(batch)))
        return out

    def _plan(self, query: str, mode: str, k: int, max_new_tokens: int, session: str | None,
              chosen: list[int] | None, now: float, *, example: bool = False) -> _Plan:
        """Retrieve for one question and build what the backbone is given: prompt ids and prefix.
        With `example` (a training example's view, where the channel being trained does the
        choosing), `_Plan.inputs` also holds every retrieved memory's salient words (`_salient`) and
        `hybrid`'s prompt shows the memories in retrieval order, whatever `PrefixConfig.hybrid_text` says."""
        t0 = time.perf_counter()
        rows: list[int] = []
        points = fused = None  # fused: retrieval's scores of `rows`, when it chose them
        named = self._named_speakers(query)
        if chosen is not None or mode not in ("full", "none"):
            points = self._query_points(query, session, now, named)
        if chosen is not None:
            rows = chosen
        elif mode == "flat":
            rows = self._retrieve_flat(points, k)
        elif mode in ("prefix", "text", "hybrid"):
            rows, fused, _ = self._retrieve(points, k, query, now, named)
            rows = _gate(rows, fused, self.config.retrieval.for_store(bool(self._speaker_of)).relative_gate)
            fused = fused[: len(rows)]  # the gate keeps the best rows, in order
        inputs = prefix = None
        shown = rows  # the memories the prompt shows, best first
        if mode in ("prefix", "hybrid") and rows:
            inputs = self._prefix_inputs(query, points, rows, now)
            if example:
                inputs.update(self._salient(rows))
            prefix, choice = self._prefix(inputs, rows, fused)
            how = "retrieved" if example or mode != "hybrid" else self.config.prefix.hybrid_text
            if how != "retrieved":  # the store's choice first: `Generation.memory_ids` says it
                top = rows[int(choice.argmax())]
                rows = [top, *(r for r in rows if r != top)]
                shown = rows[:1] if how == "chosen" else rows
        retrieve_ms = (time.perf_counter() - t0) * 1000
        budget = min(self.backbone.max_context, self.config.max_context_tokens) - max_new_tokens
        budget -= 0 if prefix is None else prefix.shape[0]
        truncated, times = False, None
        if mode == "full":
            ids, times, truncated = self._full_prompt(query, budget, now)
        elif mode in ("flat", "text", "hybrid") and rows:
            ids, times = self._memory_prompt(query, self._blocks(shown), budget, now)
        else:
            ids = self.backbone.chat_ids(query, system=self.config.system_prompt)
        return _Plan(ids=ids, prefix=prefix, rows=rows, retrieve_ms=retrieve_ms, truncated=truncated, times=times,
                     inputs=inputs)

    def _prefix(self, inputs: dict[str, Any], rows: list[int],
                fused: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-bundle attention over `_prefix_inputs` (the retrieved memories' decoded fibers at
        `rows`, with retrieval's `fused` scores when it chose them) -> the prefix (S + L, d): the
        salient-token slots of the memories the store keeps (`PrefixConfig.salient_memories`, by
        `_choice`), then the pooled slots; and each memory's choice score (K,). The attention comes
        first, so only the kept memories' words are read (a forward pass of the backbone over their texts)."""
        n = self.config.prefix.salient_memories
        with torch.no_grad():
            pooled, weights = self.attention(**{k: _batched(v) for k, v in inputs.items() if not k.startswith("token_")})
            choice = self._choice(weights, fused)
            if not self._salient_tokens:
                return pooled[0], choice
            if "token_ids" in inputs:  # every memory's words, read already (a training example's)
                keep = self.attention.kept_tokens(choice[None], inputs["token_memory"][None], n)[0]
                words = inputs["token_ids"][keep].tolist()
            else:
                kept = self.attention.top_memories(choice[None], n)[0].tolist() if n else range(len(rows))
                words = self._salient([rows[i] for i in kept])["token_ids"].tolist()
            if not words:
                return pooled[0], choice
            tokens = self.attention.token_slots(self.backbone.embed(words))  # (S, d)
        return torch.cat([tokens.to(pooled.dtype), pooled[0]]), choice

    def _choice(self, weights: dict[str, torch.Tensor], fused: np.ndarray | None) -> torch.Tensor:
        """(K,) how the store ranks the retrieved memories where `prefix` and `hybrid` keep some of
        them (`PrefixConfig.salient_memories`, `hybrid_text`): the log of the channel's relevance
        (`CrossBundleAttention.relevance`) plus `choice_retrieval_weight` times retrieval's fused
        score; the relevance alone for memories given by id. The attention and retrieval put the
        gold memory first on different questions (BENCHMARKS.md, "Training the memory channel")."""
        score = self.attention.relevance(weights)[0].float().clamp_min(1e-30).log()
        w = self.config.prefix.choice_retrieval_weight
        if fused is not None and w:
            score = score + w * torch.as_tensor(np.asarray(fused, dtype=np.float32))
        return score

    def _prefix_inputs(self, query: str, points: dict[str, np.ndarray], rows: list[int],
                       now: float) -> dict[str, Any]:
        """What cross-bundle attention reads for one question, unbatched: q_base {bundle: (d_base,)},
        q_hidden (d,), dirn {bundle: (K, d_base)}, fiber {bundle: (K, d_fiber)} (decoded, as stored).
        The salient words are read once the attention has chosen whose (`_prefix`)."""
        ids = [self._ids[r] for r in rows]
        fib = {f: self._fetch(ids, f) for f in ("salient", "hidden")}
        access = np.array(self.store.access_counts(self.user_id, ids), dtype=np.float64)
        temporal = self.temporal.encode(self._ts[rows], now=now, access_count=access)
        return {
            "q_base": {b: torch.from_numpy(points[b]) for b in BUNDLES},
            "q_hidden": self.backbone.encode([query]).hidden[0],
            "dirn": {b: torch.from_numpy(self._index[b].x[rows]) for b in BUNDLES},
            "fiber": {"temporal": temporal.fiber, "topic": torch.from_numpy(fib["salient"]),
                      "context": torch.from_numpy(fib["hidden"])},
        }

    def _salient(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """token_ids (S,) and token_memory (S,): the salient words of the memories at `rows`, in that
        order, and the index in `rows` of the memory each comes from."""
        ids: list[int] = []
        owner: list[int] = []
        if self._salient_tokens and rows:
            texts = [self.store.memory_row(self.user_id, self._ids[r])["text"] for r in rows]
            for k, words in enumerate(self.backbone.salient_ids(texts, self._salient_tokens,
                                                                order=self._salient_order)):
                ids += words
                owner += [k] * len(words)
        return {"token_ids": torch.tensor(ids, dtype=torch.long), "token_memory": torch.tensor(owner, dtype=torch.long)}

    def _fetch(self, memory_ids: list[str], field: str) -> np.ndarray:
        got = self.store.vectors_for(memory_ids, field)
        if len(got) != len(memory_ids):
            raise StoreCorrupted(f"memories are missing their {field!r} vectors")
        return self._decoded([(m, *got[m]) for m in memory_ids], field)

    def _blocks(self, rows: list[int]) -> list[tuple[str, bool, float]]:
        """What the prompt shows of each retrieved memory, best first: (text, is dialogue, write
        time). A memory is its text; a dialogue turn (one with a speaker) is "Speaker: text" inside
        a window of `neighbour_turns` turns of its conversation on either side, each turn shown once;
        the window has the retrieved turn's time."""
        n = self.config.retrieval.neighbour_turns
        shown: set[str] = set()
        out = []
        for r in rows:
            rec = self.store.memory_row(self.user_id, self._ids[r])
            if rec["speaker"] is None:
                out.append((rec["text"], False, rec["ts"]))
                continue
            if rec["id"] in shown:
                continue
            window = [rec]
            if n and rec["session"] is not None:
                window = self.store.session_turns(self.user_id, rec["session"], rec["seq"], n, n)
                window.insert(sum(t["seq"] < rec["seq"] for t in window), rec)
            turns = [t for t in window if t["id"] not in shown]
            shown.update(t["id"] for t in turns)
            out.append(("\n  ".join(turn_line(t) for t in turns), True, rec["ts"]))
        return out

    @property
    def _timeline(self) -> bool:
        return self.backbone.takes_times and self.config.timeline_tokens_per_day > 0

    def _memory_prompt(self, query: str, blocks: list[tuple[str, bool, float]], budget: int,
                       now: float) -> tuple[list[int], list[float] | None]:
        """The question after the memories (in time order on a timeline); the weakest memories go
        first if over budget. Returns the prompt ids and, on a timeline, their times."""
        dialogue = any(d for _, d, _ in blocks)
        while True:
            shown = sorted(blocks, key=lambda b: b[2]) if self._timeline else blocks  # stable: ties keep rank
            ids, times = self._timed_prompt(query, [(t, ts) for t, _, ts in shown], dialogue, now)
            if len(ids) <= budget or len(blocks) <= 1:
                return ids, times
            blocks = blocks[:-1]

    def _full_prompt(self, query: str, budget: int, now: float) -> tuple[list[int], list[float] | None, bool]:
        """Every memory in write order, left-truncated (oldest dropped) to the token budget."""
        rows = self.store.memory_rows(self.user_id)
        texts = [turn_line(r) for r in rows]
        dialogue = any(r["speaker"] is not None for r in rows)
        room = budget - len(self.backbone.chat_ids(_with_facts(query, [], dialogue), system=self.config.system_prompt))
        kept = 0
        for t in reversed(texts):
            room -= self.backbone.count_tokens(f"- {t}\n")
            if room < 0:
                break
            kept += 1
        history = [(t, r["ts"]) for t, r in zip(texts, rows)][len(texts) - kept :]
        if self._timeline:
            history.sort(key=lambda h: h[1])  # write order is time order unless times were given
        ids, times = self._timed_prompt(query, history, dialogue, now)
        return ids, times, kept < len(texts)

    def _timed_prompt(self, query: str, blocks: list[tuple[str, float]], dialogue: bool,
                      now: float) -> tuple[list[int], list[float] | None]:
        """Prompt ids for `query` after the memory `blocks` (text, write time), and on a timeline
        each token's time: its index, moved back by `timeline_tokens_per_day` times the age of the
        memory it belongs to (the template before the memories goes with the oldest; the question
        stays at now). Blocks must come in time order, so times never decrease along the prompt."""
        user_text = _with_facts(query, [t for t, _ in blocks], dialogue)
        spans = self.backbone.chat_spans(user_text, system=self.config.system_prompt) if self._timeline else None
        if spans is None:
            return self.backbone.chat_ids(user_text, system=self.config.system_prompt), None
        ids, starts = spans
        rate = self.config.timeline_tokens_per_day
        shifts, at = [], 0
        for text, ts in blocks:  # each block is "- {text}" on its own line of user_text
            at = user_text.index(f"- {text}", at)
            shifts.append((at, at + 2 + len(text), -rate * max(now - ts, 0.0) / 86400.0))
        return ids, _token_times(starts, shifts)

    # -- checks ---------------------------------------------------------------------------------
    @_guarded
    def verify(self) -> dict[str, Any]:
        """Check the store's invariants for this user; raise `StoreCorrupted` on the first broken one.

        Checked: every memory row and vector matches its checksum; every memory has one (base,
        fiber, dirn) triple per bundle (its vectors exist and decode to the bundle's widths); no
        field of width >= d_model is stored raw once its set is trained; every code names a codec
        version the store has; the index matches the rows.

        Returns:
            Counts of what was checked.
        """
        self._check_open()
        with self.store.atomic():  # one snapshot of rows, vectors and codecs
            self._sync()
            return self._verify()

    def _verify(self) -> dict[str, Any]:
        d = self.backbone.d_model
        rows = self.store.memory_rows(self.user_id)  # reading a row checks its checksum
        n = len(rows)
        widths = {"content": self.embedder.d, "context": self.embedder.d, "salient": d, "hidden": d}
        raw_large = 0
        stored = {}
        for f in FIELDS:
            items = self.store.vectors(self.user_id, f)
            if len(items) != n:
                raise StoreCorrupted(f"{n - len(items)} memories lack their {f!r} vector")
            stored[f] = items
            if not items:
                continue
            x = self._decoded(items, f)
            if x.shape[1] != widths[f]:
                raise StoreCorrupted(f"{f!r} vectors have width {x.shape[1]}, expected {widths[f]}")
            trained = self.registry.latest(self.registry.set_of(f)) is not None
            raw_large += sum(1 for _, v, _ in items if v == 0 and trained and widths[f] >= d)
        if raw_large:
            raise StoreCorrupted(f"{raw_large} vectors of width >= d_model are raw although their set is trained")
        if len(self._index["topic"]) != n:
            raise StoreCorrupted(f"index holds {len(self._index['topic'])} memories, store {n}")
        return {"memories": n, "fields": len(FIELDS), "codec_sets": {s: c.latest for s, c in self.registry.sets.items()},
                "snapshot": self._verify_snapshot(rows, stored)}

    def _verify_snapshot(self, rows: list[dict], stored: dict[str, list]) -> dict[str, int] | None:
        """Check this user's snapshot, if any, against the rows: every memory it holds that the log
        has not changed since is stored with the same columns, flags and codes, and every stored
        memory the log has not added since is in it. Returns its rows and event."""
        got = self.store.snapshot(self.user_id)
        if got is None:
            return None
        try:
            snap = unpack_snapshot(got[1], got[2])
        except SnapshotInvalid as e:
            raise StoreCorrupted(f"the snapshot of user {self.user_id!r} is damaged: {e}") from e
        changed = {m for _, m, _ in self.store.events_since(self.user_id, snap.event)}
        by_id = {r["id"]: r for r in rows}
        held = set(snap.columns["id"])
        if missing := [r["id"] for r in rows if r["id"] not in held and r["id"] not in changed]:
            raise StoreCorrupted(f"memory {missing[0]!r} is stored but not in the snapshot, and the log "
                                 "has no write of it since")
        codes = {f: dict(zip((m for m, _, _ in stored[f]), ((v, a) for _, v, a in stored[f]))) for f in SNAPSHOT_FIELDS}
        place = {}
        for f in SNAPSHOT_FIELDS:  # each row's place in its version's block
            versions = snap.vectors[f][0]
            place[f] = np.zeros(len(versions), dtype=np.int64)
            for v in np.unique(versions):
                place[f][versions == v] = np.arange(int((versions == v).sum()))
        for i, m in enumerate(snap.columns["id"]):
            if m in changed:
                continue
            r = by_id.get(m)
            if r is None:
                raise StoreCorrupted(f"the snapshot holds memory {m!r}, which is not stored and has no delete since")
            same = (r["ts"] == snap.ts[i] and r["session"] == snap.columns["session"][i]
                    and r["speaker"] == snap.columns["speaker"][i]
                    and bool(is_question(r["text"])) == bool(snap.question[i])
                    and corrects(r["text"], r["speaker"] is not None) == bool(snap.correction[i]))
            for f in SNAPSHOT_FIELDS:
                versions, blocks = snap.vectors[f]
                v, a = codes[f][m]
                same = same and v == versions[i] and np.array_equal(a, blocks[v][place[f][i]])
            if not same:
                raise StoreCorrupted(f"the snapshot of user {self.user_id!r} disagrees with the stored memory {m!r}")
        return {"rows": len(snap), "event": snap.event, "events_since": len(changed)}

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the store, after stopping the indexes' background scan builds (no thread outlives
        the call). Further calls raise `StoreClosed`."""
        with self._lock:  # not while another thread's call is running
            if not self._closed:
                self._close_indexes()
                self.store.close()
                self._closed = True

    def _close_indexes(self) -> None:
        for index in self._index.values():
            index.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("this Memory was closed")

    def _validate_query(self, query: Any) -> str:
        return self._validate_text(query, "query")

    @staticmethod
    def _validate_id(memory_id: Any) -> str:
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInput("memory id must be a non-empty string")
        return memory_id


def _with_facts(query: str, texts: list[str], dialogue: bool = False) -> str:
    """The user turn that puts memories in front of a question (chosen on a dev session, not the
    seed session; see BENCHMARKS.md). Dialogue turns are introduced as excerpts of conversations."""
    facts = "\n".join(f"- {t}" for t in texts)
    if dialogue:
        return (f"From earlier conversations:\n{facts}\n\nQuestion: {query}\n"
                "Answer using the conversations above, in one short sentence.")
    return f"Facts about me:\n{facts}\n\nQuestion: {query}\nAnswer using the facts above, in one short sentence."


def _batched(v: Any) -> Any:
    """A batch of one: a leading axis on a tensor or on each tensor of a dict."""
    return {k: t[None] for k, t in v.items()} if isinstance(v, dict) else v[None]


def _token_times(starts: list[int], blocks: list[tuple[int, int, float]]) -> list[float]:
    """Each token's index plus the time shift of the block it falls in.

    `starts` are the tokens' character offsets in the user text (-1 before it); `blocks` are
    (start, end, shift) character spans in order. A token before the first block takes its shift,
    one between two blocks the earlier one's, one after the last block none.
    """
    if not blocks:
        return [float(i) for i in range(len(starts))]
    firsts = [a for a, _, _ in blocks]
    end = blocks[-1][1]
    times = []
    for i, c in enumerate(starts):
        shift = 0.0 if c >= end else blocks[max(bisect.bisect_right(firsts, c) - 1, 0)][2]
        times.append(i + shift)
    return times


def _check_encodable(text: str, what: str) -> None:
    """Text is stored as UTF-8: a lone surrogate (which no UTF-8 text holds) is refused, not mangled."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInput(f"{what} is not valid Unicode (a lone surrogate at {e.start}); nothing was written") from e


_PAGES_LOCK = threading.Lock()
_pages_users = 0  # threads inside `_small_pages`
_pages_advised = True  # numpy's setting when the first of them entered


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Allocate without numpy's transparent-huge-page advice while building indexes. numpy advises
    huge pages for every array over 4 MB; where the kernel compacts memory on first touch of an
    advised region (THP `defrag = madvise`, its default), a new process's first 300 MB of keys
    (10^5 memories) stalled 0.5-0.8 s on it here. Process-wide while any thread is inside; nested
    and concurrent uses restore numpy's setting once the last one leaves."""
    global _pages_users, _pages_advised
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1.26
    set_advice = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if set_advice is None:
        yield
        return
    with _PAGES_LOCK:
        if _pages_users == 0:
            _pages_advised = set_advice(False)
        _pages_users += 1
    try:
        yield
    finally:
        with _PAGES_LOCK:
            _pages_users -= 1
            if _pages_users == 0:
                set_advice(_pages_advised)


def _gate(rows: list[int], fused: np.ndarray, ratio: float) -> list[int]:
    """Keep the best row and those scoring at least `ratio` of it (all of them when it is <= 0)."""
    if not rows or fused[0] <= 0:
        return rows
    return [r for r, s in zip(rows, fused) if s >= ratio * fused[0]]


def _to_unix(ts: Any, now: float, what: str = "ts") -> float:
    if ts is None:
        return now
    if isinstance(ts, _dt.datetime):
        return ts.timestamp()
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidInput(f"{what} must be unix seconds or a datetime, got {ts!r}")
    return float(ts)


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidInput(f"{name} must be a positive int, got {v!r}")
    return v


def _columns(rows: list[dict]) -> dict[str, list]:
    """Memory rows (`Store.memory_rows`) as the columns `Store.memory_columns` returns."""
    return {k: [r.get(k) for r in rows] for k in ("id", "text", "ts", "session", "speaker")}


def _record(row: dict) -> MemoryRecord:
    return MemoryRecord(id=row["id"], text=row["text"], ts=row["ts"], session=row["session"], role=row["role"],
                        meta=row["meta"], created_at=row["created_at"], updated_at=row["updated_at"],
                        access_count=row["access_count"], speaker=row["speaker"])


def _message_text(content: Any, i: int) -> str:
    """A chat message's text: a string, or the joined text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidInput(f"message {i}: only text content parts can be remembered, got {part!r:.80}")
            parts.append(part["text"])
        return "\n".join(parts)
    raise InvalidInput(f"message {i}: content must be a string or a list of text parts, got {type(content).__name__}")


__all__ = ["Memory"]
