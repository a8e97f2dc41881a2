"""The SQLite store: one file, memories of any number of users, every read and write scoped by user.

Through `sqlite-utils` on a plain `sqlite3` connection: WAL journal (for file stores), a busy
timeout so concurrent sessions wait rather than fail, `atomic()` transactions (savepoints when
nested), a `migrations` table recording each schema step by name, and arrays as safetensors bytes,
never pickle. The store knows tables and bytes, never torch modules.

Tables:
    meta        key -> value: format marker, backbone identity, embedder, config
    memories    seq (write order), id, user_id, text, ts, session, role, speaker, meta, created/updated,
                access
    memories_fts  FTS5 index of the texts, rowid = memories.seq, kept in step by triggers
    vectors     (memory_id, field) -> version (0 raw float32, >= 1 codec version), data
                (version 0: safetensors float32; >= 1: the code's bytes, whose length the codec knows)
    codecs      (set_name, version) -> trained_at, kind ('kakeya' or 'pq'), data (the serialised codec)
    weights     name -> data (trained channel weights; empty while the channel is untrained)
    history     one row per add / update / delete of a memory
    snapshots   user_id -> a blob of what opening reads of that user's memories, current to a
                history event (`ams.snapshot`): derived data, rebuilt from the rows when unusable
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from json.encoder import c_make_encoder, encode_basestring
from pathlib import Path

import numpy as np
import sqlite_utils
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .errors import SchemaTooNew, StoreBusy, StoreCorrupted

FORMAT = "ams-store"
SQLITE_MAGIC = b"SQLite format 3\x00"
JOINED_RUNS = 32  # lexical searches run restricted to one user after the shared ranking missed some of theirs


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """CREATE TABLE memories (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            text TEXT NOT NULL,
            ts REAL NOT NULL,
            session TEXT,
            role TEXT NOT NULL,
            meta TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            access_count INTEGER NOT NULL DEFAULT 0,
            last_access REAL)"""
    )
    db.execute("CREATE INDEX memories_user ON memories (user_id, seq)")
    db.execute("CREATE INDEX memories_session ON memories (user_id, session, seq)")
    db.execute(
        """CREATE TABLE vectors (
            memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            field TEXT NOT NULL,
            version INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (memory_id, field))"""
    )
    db.execute(
        """CREATE TABLE codecs (
            set_name TEXT NOT NULL, version INTEGER NOT NULL, trained_at INTEGER NOT NULL,
            data BLOB NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (set_name, version))"""
    )
    db.execute("CREATE TABLE weights (name TEXT PRIMARY KEY, data BLOB NOT NULL, updated_at REAL NOT NULL)")
    db.execute(
        """CREATE TABLE history (
            event_id INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT NOT NULL,
            user_id TEXT NOT NULL, event TEXT NOT NULL, old_text TEXT, new_text TEXT, at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX history_memory ON history (user_id, memory_id, event_id)")


def _m002_checksums(db: sqlite_utils.Database) -> None:
    """A CRC-32 per memory row (over what a user reads back) and per vector blob: a flipped bit in
    a text or an array is reported as corruption instead of being read back as data."""
    db.execute("ALTER TABLE memories ADD COLUMN checksum INTEGER")
    db.execute("UPDATE memories SET checksum = ams_row_crc(id, user_id, text, ts, session, role, meta)")
    db.execute("ALTER TABLE vectors ADD COLUMN checksum INTEGER")
    db.execute("UPDATE vectors SET checksum = ams_crc(data)")


def _m003_raw_codes(db: sqlite_utils.Database) -> None:
    """Codec codes (version >= 1) as their plain bytes: a safetensors header around a 70-byte code
    cost as much as the code itself. Raw float32 vectors (version 0) stay safetensors."""
    db.execute("UPDATE vectors SET data = ams_code_bytes(data) WHERE version >= 1")
    db.execute("UPDATE vectors SET checksum = ams_crc(data) WHERE version >= 1")


def _m004_dialogue(db: sqlite_utils.Database) -> None:
    """Who said a turn (`speaker`), and a full-text index of the texts for the lexical retrieval
    channel: FTS5 over the memories table itself (no second copy of the text), kept in step by
    triggers, so every write, update and delete of any process updates it in the same
    transaction. Porter stemming ("dogs" finds "dog"), accents folded."""
    db.execute("ALTER TABLE memories ADD COLUMN speaker TEXT")
    db.execute("CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='seq',"
               " tokenize='porter unicode61 remove_diacritics 2')")
    db.execute("CREATE TRIGGER memories_fts_add AFTER INSERT ON memories BEGIN"
               " INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text); END")
    db.execute("CREATE TRIGGER memories_fts_del AFTER DELETE ON memories BEGIN"
               " INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.seq, old.text); END")
    db.execute("CREATE TRIGGER memories_fts_upd AFTER UPDATE OF text ON memories BEGIN"
               " INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);"
               " INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text); END")
    db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")


def _m005_codec_kinds(db: sqlite_utils.Database) -> None:
    """Which kind of codec a version's bytes hold: 'kakeya' (every version before this step) or
    'pq'. A library without this step refuses the store rather than misreading a PQ codec.

    The stored config moves with it: `pq_bytes` counted Kakeya-PQ's sub-quantisers, 6 bytes short
    of a code, and now counts a code's bytes, so 6 is added and the store's next compact version
    is plain PQ (`codec = "pq"`) at the bytes its Kakeya-PQ codes took. A config that is not a
    JSON object is left for opening to report."""
    db.execute("ALTER TABLE codecs ADD COLUMN kind TEXT NOT NULL DEFAULT 'kakeya'")
    row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    try:
        config = json.loads(row[0]) if row else None
        kakeya = config.get("kakeya") if isinstance(config, dict) else None
        if not isinstance(kakeya, dict) or "codec" in kakeya:
            return
        if isinstance(kakeya.get("pq_bytes"), dict):
            kakeya["pq_bytes"] = {name: int(b) + 6 for name, b in kakeya["pq_bytes"].items()}
        kakeya["codec"] = "pq"
    except (ValueError, TypeError):  # unreadable JSON, a non-number byte count
        return
    db.execute("UPDATE meta SET value = ? WHERE key = 'config'", [json.dumps(config)])


def _m006_snapshots(db: sqlite_utils.Database) -> None:
    """Per-user snapshots of what opening reads (`ams.snapshot`), and an index that finds a user's
    history events after a given one without walking all of that user's history (a reopen from a
    snapshot asks for them)."""
    db.execute(
        """CREATE TABLE snapshots (
            user_id TEXT PRIMARY KEY, event_id INTEGER NOT NULL, data BLOB NOT NULL,
            checksum INTEGER NOT NULL, rows INTEGER NOT NULL, made_at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX history_user_event ON history (user_id, event_id)")


# Registered in order; a store records each name it has applied. Append, never edit.
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_initial", _m001_initial),
    ("002_checksums", _m002_checksums),
    ("003_raw_codes", _m003_raw_codes),
    ("004_dialogue", _m004_dialogue),
    ("005_codec_kinds", _m005_codec_kinds),
    ("006_snapshots", _m006_snapshots),
]


# A row's checksum covers its fields as JSON text. json.dumps(..., ensure_ascii=False) builds an
# encoder on every call, and `JSONEncoder.encode` still makes a circular-reference table and a C
# encoder per call: 40% of checking a row, and opening a 10^5-row store checks 10^5 rows. A row is
# a flat list with no cycles to look for, so where the C encoder exists it is made once and called
# directly; the text is the same (tests/test_hostile.py checks it against json.dumps).
if c_make_encoder is not None:
    _ROW_ENCODER = c_make_encoder(None, None, encode_basestring, None, ": ", ", ", False, False, True)

    def _json_text(fields: list) -> str:
        return "".join(_ROW_ENCODER(fields, 0))
else:  # a Python without the json C accelerator
    _json_text = json.JSONEncoder(ensure_ascii=False).encode


def row_crc(memory_id, user_id, text, ts, session, role, meta, speaker=None) -> int:
    """CRC-32 of a memory row's user-visible fields (meta as its stored JSON text). A row without a
    speaker checksums as schema 002 did, so older rows keep their checksums."""
    fields = [memory_id, user_id, text, ts, session, role, meta] + ([] if speaker is None else [speaker])
    return zlib.crc32(_json_text(fields).encode("utf-8", "surrogatepass"))


def _crc(data) -> int:
    return zlib.crc32(data)


def pack(array: np.ndarray) -> bytes:
    return st_save({"v": np.ascontiguousarray(array)})


def unpack(data: bytes) -> np.ndarray:
    try:
        return st_load(bytes(data))["v"]
    except Exception as e:  # safetensors raises several types on bad bytes
        raise StoreCorrupted(f"unreadable array in store: {e}") from e


class Store:
    """An AMS SQLite file. Use `Store.open(path)`; `":memory:"` gives a throwaway store."""

    def __init__(self, conn: sqlite3.Connection, path: str, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._joined_for: dict[str, int] = {}  # user -> lexical searches left to run joined (see `lexical`)

    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_ms: int = 10_000) -> Store:
        """Open or create a store.

        Raises:
            StoreCorrupted: the file exists but is not an SQLite database, or not an AMS store.
            SchemaTooNew: the store was written by a newer library.
        """
        path = str(path)
        if path != ":memory:":
            p = Path(path)
            if p.is_dir():
                raise StoreCorrupted(f"{path} is a directory, not a store file")
            if p.exists() and p.stat().st_size > 0:
                with open(p, "rb") as f:
                    if f.read(16) != SQLITE_MAGIC:
                        raise StoreCorrupted(f"{path} is not an SQLite database")
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.DatabaseError as e:
            raise StoreCorrupted(f"{path} is not a readable SQLite database: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:  # someone else's database: leave it exactly as it is
                raise StoreCorrupted(f"{path} is an SQLite database but not an AMS store")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.create_function("ams_row_crc", -1, row_crc, deterministic=True)
            conn.create_function("ams_crc", 1, _crc, deterministic=True)
            conn.create_function("ams_code_bytes", 1, lambda b: unpack(b).astype(np.uint8).tobytes(),
                                 deterministic=True)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreCorrupted(f"{path} is not a readable SQLite database: {e}") from e
        except BaseException:
            conn.close()
            raise
        store = cls(conn, path, busy_timeout_ms)
        try:
            store._migrate()
            if store.get_meta("format") != FORMAT:
                raise StoreCorrupted(f"{path} is not an AMS store")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreCorrupted(f"{path} failed to open as an AMS store: {e}") from e
        except Exception:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A read transaction: one consistent snapshot of the file until the block ends (WAL
        readers never block writers). Nested blocks are savepoints."""
        with self.db.atomic():
            yield

    @contextmanager
    def write(self, *, wait_ms: int | None = None) -> Iterator[None]:
        """A write transaction: everything in it lands, or nothing.

        It takes the file's write lock first (`BEGIN IMMEDIATE`), so what the block reads is what it
        writes over: another process's commit cannot slip in between. A writer that finds the lock
        taken waits, retried by SQLite's busy handler, for at most the busy timeout (or `wait_ms`,
        for work that can be skipped); then `StoreBusy`. Nested blocks are savepoints.
        """
        if self.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        waited = self.busy_timeout_ms if wait_ms is None else wait_ms
        try:
            if wait_ms is not None:
                self.conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            finally:
                if wait_ms is not None:
                    self.conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            busy = busy_error(e, f"{waited} ms")
            if busy is None:
                raise
            raise busy from e

    def pin(self) -> None:
        """Start the read snapshot of the open transaction now (a read does; BEGIN does not)."""
        self.conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()

    def data_version(self) -> int:
        """A number that changes when another connection commits to the file (never for our own)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- schema ---------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring the file to this library's schema. A store already there is only read, so an
        open never waits for another process's write lock; a new store, or one a step behind,
        takes the lock and looks again under it."""
        has_table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
        if self.db.execute(has_table).fetchone() and len(self._applied()) == len(MIGRATIONS) \
                and self.get_meta("format") is not None:
            return
        with self.write():
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            done = self._applied()
            for name, fn in MIGRATIONS:
                if name not in done:
                    fn(self.db)
                    self.db.execute("INSERT INTO migrations VALUES (?, ?)", [name, time.time()])
            if self.get_meta("format") is None and not done:
                self.set_meta("format", FORMAT)

    def _applied(self) -> set[str]:
        """The migrations applied to the file, all of them known to this library.

        Raises:
            SchemaTooNew: the store has migrations this library does not know.
        """
        done = {r[0] for r in self.db.execute("SELECT name FROM migrations")}
        unknown = done - {name for name, _ in MIGRATIONS}
        if unknown:
            raise SchemaTooNew(f"store has migrations this library does not know: {sorted(unknown)}")
        return done

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT count(*) FROM migrations").fetchone()[0]

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        [key, value])

    # -- memories -------------------------------------------------------------------------------
    def insert_memory(self, row: dict) -> int:
        """Insert a memory row; returns its write-order `seq`."""
        cur = self.db.execute(
            "INSERT INTO memories (id, user_id, text, ts, session, role, speaker, meta, created_at, updated_at,"
            " checksum) VALUES (:id, :user_id, :text, :ts, :session, :role, :speaker, :meta, :created_at,"
            " :updated_at, ams_row_crc(:id, :user_id, :text, :ts, :session, :role, :meta, :speaker))",
            {**row, "speaker": row.get("speaker"),
             "meta": json.dumps(row.get("meta")) if row.get("meta") is not None else None},
        )
        self.add_history(row["id"], row["user_id"], "ADD", None, row["text"], row["created_at"])
        return int(cur.lastrowid)

    def memory_rows(self, user_id: str, *, limit: int = -1, offset: int = 0) -> list[dict]:
        cur = self.db.execute(
            "SELECT * FROM memories WHERE user_id = ? ORDER BY seq LIMIT ? OFFSET ?",
            [user_id, limit, offset],
        )
        return [self._row(cur, r) for r in cur.fetchall()]

    def memory_columns(self, user_id: str, fields: tuple[str, ...] = ()) -> dict[str, list]:
        """This user's memories as columns (id, ts, session, speaker, text), in write
        order, and for each of `fields` its vectors as columns `field` -> (versions, data as
        stored), all in one query, every row and vector checked against its checksum: what
        opening a store reads, without a dict per row (10^5 rows a second faster than
        `memory_rows`) and without a query per field (which walked the memories index again
        and took 0.2 s longer at 10^5 for two fields)."""
        joined = "".join(f" LEFT JOIN vectors v{i} ON v{i}.memory_id = m.id AND v{i}.field = ?"
                         for i in range(len(fields)))
        vector_cols = "".join(f", v{i}.version, v{i}.data, v{i}.checksum" for i in range(len(fields)))
        rows = self.db.execute(
            "SELECT m.id, m.user_id, m.text, m.ts, m.session, m.role, m.meta, m.speaker, m.checksum"
            f"{vector_cols} FROM memories m{joined} WHERE m.user_id = ? ORDER BY m.seq", [*fields, user_id]).fetchall()
        for r in rows:
            if r[8] != row_crc(*r[:8]):
                raise StoreCorrupted(f"memory {r[0]!r} fails its checksum: the file was damaged")
        cols = list(zip(*rows)) or [()] * (9 + 3 * len(fields))
        out = {"id": list(cols[0]), "text": list(cols[2]), "ts": list(cols[3]), "session": list(cols[4]),
               "speaker": list(cols[7])}
        for i, field in enumerate(fields):
            versions, data, sums = cols[9 + 3 * i : 12 + 3 * i]
            if None in data:
                raise StoreCorrupted(f"memory {out['id'][data.index(None)]!r} is missing its {field!r} vector")
            _check_vectors(out["id"], data, sums)
            out[field] = (list(versions), list(data))
        return out

    def memory_rows_by_id(self, user_id: str, memory_ids: list[str]) -> list[dict]:
        """This user's rows among `memory_ids`, in write order (ids of others or deleted are skipped)."""
        out: list[dict] = []
        for i in range(0, len(memory_ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = memory_ids[i : i + 500]
            # `+user_id`: look the ids up in their unique index; given the choice, SQLite walked all of
            # the user's rows (memories_user) for each chunk, 1 s for 10^4 ids in a 10^5-row store
            cur = self.db.execute(f"SELECT * FROM memories WHERE +user_id = ? AND id IN ({','.join('?' * len(chunk))})",
                                  [user_id, *chunk])
            out += [self._row(cur, r) for r in cur.fetchall()]
        return sorted(out, key=lambda r: r["seq"])

    def memory_row(self, user_id: str, memory_id: str) -> dict | None:
        cur = self.db.execute("SELECT * FROM memories WHERE user_id = ? AND id = ?", [user_id, memory_id])
        r = cur.fetchone()
        return self._row(cur, r) if r else None

    def count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return self.db.execute("SELECT count(*) FROM memories").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM memories WHERE user_id = ?", [user_id]).fetchone()[0]

    def lexical(self, user_id: str, terms: list[str], limit: int) -> list[tuple[str, float]]:
        """BM25 search of a user's texts for any of `terms` (plain words, matched after stemming);
        (memory_id, score) best first (ties by write order), higher is better, at most `limit`.

        The index is shared by every user of the file. The best `limit` matches of all users are
        taken first, which FTS5 ranks without joining each match to its row (half the time at 10^5
        rows); only when other users' rows are among them, so that some of this user's best may lie
        further down, is the search repeated restricted to this user. After that happens, this
        user's next `JOINED_RUNS` searches go straight to the restricted one (a file shared by
        several users would otherwise pay for both), then the shortcut is tried again."""
        if not terms or limit <= 0:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)  # quoted: no FTS5 syntax gets in
        if self._joined_for.get(user_id, 0) > 0:
            self._joined_for[user_id] -= 1
            return self._lexical_joined(user_id, match, limit)
        top = self.db.execute(
            "SELECT m.id, m.user_id, f.s FROM (SELECT rowid, -bm25(memories_fts) AS s FROM memories_fts"
            " WHERE memories_fts MATCH ? ORDER BY s DESC, rowid LIMIT ?) f LEFT JOIN memories m ON m.seq = f.rowid"
            " ORDER BY f.s DESC, f.rowid", [match, limit]).fetchall()
        if len(top) < limit or all(r[1] == user_id for r in top):  # every match seen, or all of them this user's
            return [(r[0], float(r[2])) for r in top if r[1] == user_id]
        self._joined_for[user_id] = JOINED_RUNS
        return self._lexical_joined(user_id, match, limit)

    def _lexical_joined(self, user_id: str, match: str, limit: int) -> list[tuple[str, float]]:
        return [(r[0], float(r[1])) for r in self.db.execute(
            "SELECT m.id, -bm25(memories_fts) AS s FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid"
            " WHERE memories_fts MATCH ? AND m.user_id = ? ORDER BY s DESC, m.seq LIMIT ?", [match, user_id, limit])]

    def session_turns(self, user_id: str, session: str, seq: int, before: int, after: int) -> list[dict]:
        """Up to `before` turns of a session written before row `seq` and `after` written after it, in order."""
        cur = self.db.execute(
            "SELECT * FROM (SELECT * FROM memories WHERE user_id = ? AND session = ? AND seq < ?"
            " ORDER BY seq DESC LIMIT ?) UNION ALL SELECT * FROM (SELECT * FROM memories WHERE user_id = ?"
            " AND session = ? AND seq > ? ORDER BY seq LIMIT ?) ORDER BY seq",
            [user_id, session, seq, before, user_id, session, seq, after])
        return [self._row(cur, r) for r in cur.fetchall()]

    def users(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT user_id FROM memories ORDER BY user_id")]

    def update_text(self, user_id: str, memory_id: str, text: str, now: float) -> str:
        old = self.db.execute("SELECT text FROM memories WHERE user_id = ? AND id = ?",
                              [user_id, memory_id]).fetchone()[0]
        self.db.execute("UPDATE memories SET text = ?, updated_at = ?,"
                        " checksum = ams_row_crc(id, user_id, ?, ts, session, role, meta, speaker)"
                        " WHERE user_id = ? AND id = ?", [text, now, text, user_id, memory_id])
        self.add_history(memory_id, user_id, "UPDATE", old, text, now)
        return old

    def delete_memory(self, user_id: str, memory_id: str, now: float) -> None:
        old = self.db.execute("SELECT text FROM memories WHERE user_id = ? AND id = ?",
                              [user_id, memory_id]).fetchone()[0]
        self.db.execute("DELETE FROM vectors WHERE memory_id IN "
                        "(SELECT id FROM memories WHERE user_id = ? AND id = ?)", [user_id, memory_id])
        self.db.execute("DELETE FROM memories WHERE user_id = ? AND id = ?", [user_id, memory_id])
        self.add_history(memory_id, user_id, "DELETE", old, None, now)

    def touch(self, user_id: str, memory_ids: list[str], now: float) -> None:
        """Count one access per listed id (a retrieval that reached the prompt or prefix); repeats add up."""
        self.db.conn.executemany(
            "UPDATE memories SET access_count = access_count + 1, last_access = ? WHERE user_id = ? AND id = ?",
            [(now, user_id, m) for m in memory_ids],
        )

    def access_counts(self, user_id: str, memory_ids: list[str]) -> list[int]:
        """Each listed memory's access count (0 for one not stored), in the order given."""
        if not memory_ids:
            return []
        marks = ",".join("?" * len(memory_ids))
        got = dict(self.db.execute(f"SELECT id, access_count FROM memories WHERE +user_id = ? AND id IN ({marks})",
                                   [user_id, *memory_ids]).fetchall())
        return [int(got.get(m, 0)) for m in memory_ids]

    def add_history(self, memory_id: str, user_id: str, event: str, old: str | None, new: str | None,
                    at: float) -> None:
        self.db.execute("INSERT INTO history (memory_id, user_id, event, old_text, new_text, at)"
                        " VALUES (?, ?, ?, ?, ?, ?)", [memory_id, user_id, event, old, new, at])

    def events_since(self, user_id: str, event_id: int) -> list[tuple[int, str, str]]:
        """(event_id, memory_id, event) of a user's ADD / UPDATE / DELETE events after `event_id`."""
        return [tuple(r) for r in self.db.execute(
            "SELECT event_id, memory_id, event FROM history WHERE user_id = ? AND event_id > ? ORDER BY event_id",
            [user_id, event_id])]

    def events_count_since(self, user_id: str, event_id: int) -> int:
        """How many of a user's events came after `event_id`."""
        return int(self.db.execute("SELECT count(*) FROM history WHERE user_id = ? AND event_id > ?",
                                   [user_id, event_id]).fetchone()[0])

    def last_event_id(self) -> int:
        """The newest history event of any user (0 for none): a watermark for `events_since`."""
        return int(self.db.execute("SELECT coalesce(max(event_id), 0) FROM history").fetchone()[0])

    def history(self, user_id: str, memory_id: str) -> list[dict]:
        cur = self.db.execute(
            "SELECT event, old_text, new_text, at FROM history WHERE user_id = ? AND memory_id = ?"
            " ORDER BY event_id", [user_id, memory_id])
        return [self._row(cur, r) for r in cur.fetchall()]

    @staticmethod
    def _row(cur: sqlite3.Cursor, r: tuple) -> dict:
        d = dict(zip([c[0] for c in cur.description], r))
        if "checksum" in d and "text" in d:  # a whole memory row: it must be what was written
            if d["checksum"] != row_crc(d["id"], d["user_id"], d["text"], d["ts"], d["session"], d["role"], d["meta"],
                                        d.get("speaker")):
                raise StoreCorrupted(f"memory {d['id']!r} fails its checksum: the file was damaged")
            del d["checksum"]
        if d.get("meta") is not None and "meta" in d:
            try:
                d["meta"] = json.loads(d["meta"])
            except ValueError as e:
                raise StoreCorrupted(f"memory {d.get('id')!r} has unreadable meta: {e}") from e
        return d

    # -- vectors and codecs ---------------------------------------------------------------------
    def put_vector(self, memory_id: str, field: str, version: int, array: np.ndarray) -> None:
        """Store a raw float32 vector (version 0, as safetensors) or a codec's code (its bytes)."""
        data = pack(array) if version == 0 else np.ascontiguousarray(array, dtype=np.uint8).tobytes()
        # REPLACE (delete, then insert at the end) rather than an in-place UPDATE: re-coding shrinks
        # 1.5-2.3 KB raw vectors to 62-byte codes, and shrunken rows left their pages 80% empty
        # (2,077 table bytes for 248 bytes of codes a memory at 10^4); freed pages are reused.
        self.db.execute(
            "INSERT OR REPLACE INTO vectors (memory_id, field, version, data, checksum) VALUES (?, ?, ?, ?, ?)",
            [memory_id, field, version, data, _crc(data)])

    def vectors(self, user_id: str | None, field: str, *, version: int | None = None) -> list[tuple[str, int, np.ndarray]]:
        """(memory_id, version, array) of one field, in write order; all users when user_id is None."""
        ids, versions, data = self.vector_columns(user_id, field, version=version)
        return [(m, v, unpack(d) if v == 0 else np.frombuffer(d, dtype=np.uint8)) for m, v, d in zip(ids, versions, data)]

    def vector_columns(self, user_id: str | None, field: str, *, version: int | None = None,
                       seqs: Sequence[int] | None = None) -> tuple[list[str], list[int], list[bytes]]:
        """(memory ids, versions, data) of one field, in write order (all users when user_id is
        None; only the memories whose write-order `seq` is among `seqs` when given: a sample read
        by lookups, not a scan), every row checked against its checksum; the data left as stored
        (version 0: safetensors float32; >= 1: the code's bytes)."""
        sql = ("SELECT v.memory_id, v.version, v.data, v.checksum FROM vectors v JOIN memories m ON m.id = v.memory_id"
               " WHERE v.field = ?")
        args: list = [field]
        if user_id is not None:
            sql += " AND m.user_id = ?"
            args.append(user_id)
        if version is not None:
            sql += " AND v.version = ?"
            args.append(version)
        if seqs is not None:  # one JSON parameter, however many: no bound-parameter limit to chunk under
            sql += " AND m.seq IN (SELECT value FROM json_each(?))"
            args.append(json.dumps([int(q) for q in seqs]))
        rows = self.db.execute(sql + " ORDER BY m.seq", args).fetchall()
        ids, versions, data, sums = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
        _check_vectors(ids, data, sums)
        return ids, versions, data

    def vectors_for(self, memory_ids: list[str], field: str) -> dict[str, tuple[int, np.ndarray]]:
        marks = ",".join("?" * len(memory_ids))
        rows = self.db.execute(f"SELECT memory_id, version, data, checksum FROM vectors WHERE field = ?"
                               f" AND memory_id IN ({marks})", [field, *memory_ids])
        return {r[0]: (r[1], _unpack_checked(r)) for r in rows}

    def memories_written(self) -> int:
        """Memories ever written to the store, all users, deleted ones included; O(1), from the
        AUTOINCREMENT counter (a count(*) would scan the table on every write)."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'memories'").fetchone()
        return int(row[0]) if row else 0

    def codec_keys(self) -> set[tuple[str, int]]:
        return {(r[0], r[1]) for r in self.db.execute("SELECT set_name, version FROM codecs")}

    def put_codec(self, set_name: str, version: int, trained_at: int, kind: str, data: bytes) -> None:
        self.db.execute("INSERT INTO codecs (set_name, version, trained_at, data, created_at, kind)"
                        " VALUES (?, ?, ?, ?, ?, ?)", [set_name, version, trained_at, data, time.time(), kind])

    def codecs(self) -> list[tuple[str, int, int, str, bytes]]:
        """(set_name, version, trained_at, kind, data) of every codec version, in set and version order."""
        return [tuple(r) for r in self.db.execute(
            "SELECT set_name, version, trained_at, kind, data FROM codecs ORDER BY set_name, version")]

    def put_weights(self, name: str, data: bytes) -> None:
        self.db.execute("INSERT INTO weights VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                        " data = excluded.data, updated_at = excluded.updated_at", [name, data, time.time()])

    def get_weights(self, name: str) -> bytes | None:
        row = self.db.execute("SELECT data FROM weights WHERE name = ?", [name]).fetchone()
        return bytes(row[0]) if row else None

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot(self, user_id: str) -> tuple[int, bytes, int] | None:
        """(event_id, data, checksum) of a user's snapshot, or None."""
        row = self.db.execute("SELECT event_id, data, checksum FROM snapshots WHERE user_id = ?", [user_id]).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), int(row[2]))

    def put_snapshot(self, user_id: str, event_id: int, data: bytes, rows: int) -> None:
        """Store a user's snapshot in place of the one stored. Always: an older one (another
        process's read came later) is still whole, just further behind, and a damaged one whose
        event column no longer reads right must not be kept for good."""
        self.db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
                        [user_id, event_id, data, _crc(data), rows, time.time()])

    def snapshot_info(self) -> list[dict]:
        """Each user's snapshot: user, event, rows, bytes, made_at (no data read)."""
        cur = self.db.execute("SELECT user_id, event_id, rows, length(data), made_at FROM snapshots ORDER BY user_id")
        return [dict(zip(("user", "event", "rows", "bytes", "made_at"), r)) for r in cur.fetchall()]

    def bytes_by_table(self) -> dict[str, int]:
        """On-disk bytes of each table and index (SQLite's dbstat), or {} where dbstat is missing."""
        try:
            rows = self.db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.DatabaseError:
            return {}
        return {r[0]: int(r[1]) for r in rows}


def _check_vectors(ids: list[str], data: list[bytes], sums: list[int]) -> None:
    """Raise `StoreCorrupted` for the first vector whose bytes do not match their checksum."""
    for i, crc in enumerate(map(zlib.crc32, data)):  # the C function itself: 2 x 10^5 rows on a reopen
        if crc != sums[i]:
            raise StoreCorrupted(f"a vector of memory {ids[i]!r} fails its checksum: the file was damaged")


def _unpack_checked(r: tuple) -> np.ndarray:
    """A (memory_id, version, data, checksum) row's array, once its bytes match their checksum."""
    _check_vectors([r[0]], [r[2]], [r[3]])
    return unpack(r[2]) if r[1] == 0 else np.frombuffer(bytes(r[2]), dtype=np.uint8)


def busy_error(e: sqlite3.OperationalError, waited: str = "its busy timeout") -> StoreBusy | None:
    """`StoreBusy` when `e` says the lock stayed taken past the busy timeout, else None."""
    msg = str(e).lower()
    if "locked" in msg or "busy" in msg:
        return StoreBusy(f"the store stayed locked by another writer for {waited}: {e}")
    return None
