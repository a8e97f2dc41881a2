"""The Kakeya registry: which codec set compresses which per-memory field, and when sets train.

Sets (each aligned to its owning bundle's axis, each versioned):
    sentence  owner topic    fields content, context   width d_e (MiniLM)
    salient   owner topic    field  salient            width d   (backbone token space)
    hidden    owner context  field  hidden             width d   (backbone last layer)
A set trains its first codec once it holds `min_entries` vectors (default 64); until then its
fields are stored raw and the rows are coded on that first training. Each time the set has grown
`growth` times (default 4: at 64, 256, 1024, ... vectors) it trains a new version on the decoded
vectors; new rows use the newest version and earlier rows keep theirs, so no row is coded twice and
errors never compound. A version trained on at least `pq_min_train` vectors is compact, `pq_bytes`
a vector: a `PQCodec` by default, a Kakeya codec with a PQ residual with `codec="kakeya-pq"`; a
smaller one is a Kakeya codec with the dense int8 residual. Small stores stay exact to about 1%,
large ones within a few hundred bytes a memory. Versions of both kinds live side by side in one set.
The registry keeps codecs in memory and hands them out as safetensors bytes with their kind
(`CODEC_KINDS`); the store keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import KAKEYA_HEADER, KakeyaConfig
from ..errors import StoreCorrupted
from .codec import KakeyaCodec
from .pq import PQCodec

Codec = KakeyaCodec | PQCodec
CODEC_KINDS: dict[str, type[KakeyaCodec] | type[PQCodec]] = {"kakeya": KakeyaCodec, "pq": PQCodec}


def load_codec(kind: str, data: bytes) -> Codec:
    """A codec from its stored kind and safetensors bytes; StoreCorrupted for an unknown kind or bad bytes."""
    if kind not in CODEC_KINDS:
        raise StoreCorrupted(f"a codec of unknown kind {kind!r}")
    return CODEC_KINDS[kind].from_bytes(data)


@dataclass(frozen=True)
class SetSpec:
    owner: str  # the bundle whose axis t_dir follows
    fields: tuple[str, ...]
    width: int


@dataclass
class CodecSet:
    spec: SetSpec
    versions: dict[int, Codec] = field(default_factory=dict)
    trained_at: dict[int, int] = field(default_factory=dict)  # version -> vectors it was trained on

    @property
    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None


def default_sets(d_embed: int, d_model: int) -> dict[str, SetSpec]:
    return {
        "sentence": SetSpec("topic", ("content", "context"), d_embed),
        "salient": SetSpec("topic", ("salient",), d_model),
        "hidden": SetSpec("context", ("hidden",), d_model),
    }


def canonical_axis(x: np.ndarray) -> np.ndarray:
    """A bundle's axis over a field: the unit mean direction of the memories' vectors (d,)."""
    m = np.asarray(x, dtype=np.float64).mean(0)
    return m / max(np.linalg.norm(m), 1e-12)


class KakeyaRegistry:
    """Routes fields to codec sets; decides when each set trains.

    Args:
        specs: set name -> `SetSpec`.
        cfg: training thresholds and codec parameters.
    """

    def __init__(self, specs: dict[str, SetSpec], cfg: KakeyaConfig) -> None:
        self.cfg = cfg
        self.sets = {name: CodecSet(spec) for name, spec in specs.items()}
        self._field_set = {f: name for name, s in specs.items() for f in s.fields}

    def set_of(self, field_name: str) -> str:
        return self._field_set[field_name]

    def latest(self, set_name: str) -> int | None:
        return self.sets[set_name].latest

    def due(self, set_name: str, n_vectors: int) -> bool:
        """Whether a set holding `n_vectors` should train a (new) codec version now."""
        s = self.sets[set_name]
        if s.latest is None:
            return n_vectors >= self.cfg.min_entries
        return n_vectors >= self.cfg.growth * s.trained_at[s.latest]

    def train(self, set_name: str, xt: np.ndarray, *, seed: int = 0, n_vectors: int | None = None) -> int:
        """Train a new version of a set on `xt` (n, width) (a seeded sample of at most
        `max_train`); returns the version number.

        Args:
            n_vectors: how many vectors the set holds, when `xt` is already a sample of them
                (default `len(xt)`): growth (`due`) counts from it.
        """
        s = self.sets[set_name]
        n = len(xt) if n_vectors is None else n_vectors
        if len(xt) > self.cfg.max_train:
            xt = xt[np.random.default_rng(seed).choice(len(xt), self.cfg.max_train, replace=False)]
        nbytes = self.cfg.pq_bytes.get(set_name, 0) if len(xt) >= self.cfg.pq_min_train else 0
        codec: Codec
        if nbytes and self.cfg.codec == "pq":
            codec = PQCodec(s.spec.width, pq_bytes=min(nbytes, s.spec.width), seed=seed).train(xt)
        else:
            m = min(nbytes - KAKEYA_HEADER, s.spec.width) if nbytes else 0
            codec = KakeyaCodec(s.spec.width, variance=self.cfg.variance, n_segments=self.cfg.n_segments,
                                seed=seed, pq_bytes=m).train(xt, axis=canonical_axis(xt))
        version = (s.latest or 0) + 1
        s.versions[version], s.trained_at[version] = codec, n
        return version

    def encode(self, field_name: str, x: np.ndarray) -> tuple[int, np.ndarray] | None:
        """(version, codes) of `x` with the field's newest codec, or None while its set is untrained."""
        s = self.sets[self.set_of(field_name)]
        if s.latest is None:
            return None
        return s.latest, s.versions[s.latest].encode(x)

    def decode(self, field_name: str, version: int, codes: np.ndarray) -> np.ndarray:
        return self.sets[self.set_of(field_name)].versions[version].decode(codes)

    def codec(self, set_name: str, version: int) -> Codec:
        return self.sets[set_name].versions[version]

    def load(self, set_name: str, version: int, trained_at: int, kind: str, data: bytes) -> None:
        s = self.sets[set_name]
        s.versions[version], s.trained_at[version] = load_codec(kind, data), trained_at
