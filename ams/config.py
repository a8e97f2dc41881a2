"""Configuration of a memory store, as pydantic models.

A config is stored inside the store when it is created, so a reopened store behaves exactly as it
did; passing a different config to an existing store raises `StoreMismatch` for the fields that
change what is stored (encoders, codec layout) and silently applies the rest (retrieval, generation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Settings read only when searching: a store written by a newer version may carry ones this version
# lacks, and is opened without them (`MemoryConfig.from_stored`). Stores written since record which of
# their settings are read only when answering (`MemoryConfig.answer_time_settings`), which widens this.
SEARCH_ONLY = ("retrieval",)
KAKEYA_HEADER = 6  # bytes of a Kakeya-PQ code's coarse part (alpha, t, segment)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TemporalConfig(_Frozen):
    n_atoms: int = Field(16, ge=2, le=256, description="Number of log-spaced SPCE frequency atoms.")
    shortest_period_s: float = Field(60.0, gt=0, description="Period of the fastest atom (one minute).")
    longest_period_s: float = Field(
        10 * 365.25 * 86400, gt=0, description="Period of the slowest atom (ten years)."
    )
    recency_half_life_days: float = Field(30.0, gt=0, description="Half-life of the recency feature.")


class KakeyaConfig(_Frozen):
    min_entries: int = Field(64, ge=8, description="Vectors a codec set needs before it is trained.")
    growth: float = Field(
        4.0, gt=1.0, description="A set trains a new codec version when it has grown this many times."
    )
    variance: float = Field(0.99, gt=0, le=1, description="PCA variance kept by a codec.")
    n_segments: int = Field(16, ge=1, le=65535, description="Spherical k-means segments per codec.")
    max_train: int = Field(20000, ge=64, description="Most vectors a codec trains on (a seeded sample).")
    pq_min_train: int = Field(
        4096, ge=1024, description="A codec version trained on at least this many vectors is compact (`codec`, "
        "`pq_bytes` bytes a vector); smaller ones keep Kakeya's dense int8 residual (d + 8 bytes).",
    )
    codec: Literal["pq", "kakeya-pq"] = Field(
        "pq", description="The compact codec of a large set: 'pq', product quantisation of the vector less the "
        "set's mean, or 'kakeya-pq', Kakeya's coarse part (6 bytes) with a product-quantised residual. At equal "
        "bytes 'pq' reconstructs every stored field better (benchmarks/codecs.py). Stores made before this "
        "setting existed are moved to 'pq' at the same bytes a code by migration 005_codec_kinds; their "
        "earlier versions keep decoding.",
    )
    pq_bytes: dict[str, int] = Field(
        default_factory=lambda: {"sentence": 70, "salient": 54, "hidden": 54},
        description="Bytes of a vector's code per codec set once it is large: 70 + 70 + 54 + 54 keeps a "
        "memory's four vectors within 248 bytes. 'kakeya-pq' spends 6 of them on its coarse part.",
    )

    @field_validator("pq_bytes")
    @classmethod
    def _pq_bytes(cls, v: dict[str, int]) -> dict[str, int]:
        if any(not isinstance(b, int) or not 1 <= b <= 4096 for b in v.values()):
            raise ValueError("pq_bytes values must be between 1 and 4096")
        return v

    @model_validator(mode="after")
    def _coarse_part_fits(self) -> KakeyaConfig:
        if self.codec == "kakeya-pq" and any(b <= KAKEYA_HEADER for b in self.pq_bytes.values()):
            raise ValueError(f"codec 'kakeya-pq' needs pq_bytes above its {KAKEYA_HEADER}-byte coarse part")
        return self


class RetrievalConfig(_Frozen):
    topic_weight: float = Field(1.0, ge=0, description="Weight of the topic bundle's score in fusion.")
    context_weight: float = Field(0.25, ge=0, description="Weight of the context bundle's score.")
    turn_context_weight: float = Field(
        0.75, ge=0, description="Added to the context bundle's weight for dialogue turns (memories with a "
        "speaker), whose context point is the text of the turns before them with their own: for a turn "
        "it is as telling as the turn itself, for a fact list the session mixture is mostly noise.",
    )
    temporal_weight: float = Field(0.05, ge=0, description="Weight of the temporal bundle's score.")
    exact_below: int = Field(
        4096, ge=0, description="Stores with fewer memories than this are scanned exactly."
    )
    index: Literal["scan", "tree"] = Field(
        "scan", description="First stage of a bundle's search at or above exact_below memories: 'scan' scores "
        "every memory in 4-bit product-quantised form and re-scores the best `rerank` exactly; 'tree' "
        "descends a direction tree (hierarchical spherical k-means) by beam search. On 10^5 real sentence "
        "vectors the scan found the exact top-10 in 0.9 ms a query, the tree 99% of them in 11 ms (beam 256).",
    )
    rerank: int = Field(128, ge=1, description="Memories the coded scan hands to exact re-scoring, per bundle "
                        "(at least `candidates`).")
    branching: int = Field(16, ge=2, description="Children of a direction tree's root (its children split into leaves of about leaf_size).")
    leaf_size: int = Field(64, ge=2, description="Most memories in a direction-tree leaf.")
    beam: int = Field(
        32, ge=1, description="Nodes kept per level by the tree's beam search (8 found 72% of the exact top-10 "
        "on 10,000 real sentence vectors, 32 found 98%).",
    )
    candidates: int = Field(64, ge=1, description="Candidates each bundle's index hands to fusion.")
    dialogue_candidates: int = Field(
        256, ge=1, description="Candidates each bundle hands to fusion in a store that holds dialogue turns "
        "(memories with a speaker), where the channels matter most: a turn that dense scores alone rank low "
        "(\"yes, Bhutan, finally\") needs to be in the pool for the speaker and people channels to lift it (64 "
        "found the gold turn in the top 5 for 63% of the `train` dialogue questions, 256 for 73%). Fact stores "
        "keep `candidates`: at 10^5 memories the wider pool costs fused retrieval 0.7 to 1.7 ms (BENCHMARKS.md, Scale).",
    )
    lexical_weight: float = Field(
        0.1, ge=0, description="Weight of the lexical channel (SQLite FTS5 BM25 over the texts, scaled so the "
        "query's best match scores 1); its hits join the candidates.",
    )
    dialogue_lexical_weight: float = Field(
        0.05, ge=0, description="`lexical_weight` in a store that holds dialogue turns. There BM25's best match "
        "is often another person's turn on the same topic; on the `train` transcripts (1,000 turns, seeds 0-2) "
        "weights 0, 0.05 and 0.1 found the gold turn first for 53%, 54% and 53% of questions and in the top 5 "
        "for 77%, 76% and 74%.",
    )
    speaker_weight: float = Field(
        0.6, ge=0, description="Bonus for turns whose speaker the query names (\"What is Ana's dog called?\").",
    )
    holder_weight: float = Field(
        0.3, ge=0, description="Taken off memories written as facts (without a speaker) that are about "
        "someone the question does not ask about (`turns.holders`): \"my daughter's cat\" when the question "
        "asks about my wife's, a named person's allergy when it asks about my brother's. On 200 validation "
        "questions (held-out split, 20 to 1,000 facts) the memory `hybrid` keeps was gold for 161 with 0, "
        "173 with 0.1, 178 with 0.2, 181 with 0.3 and 182 with 0.5 (BENCHMARKS.md, \"Whom a fact is about\").",
    )
    people_weight: float = Field(
        0.6, ge=0, description="Weight of the people channel for dialogue turns: +1 for a turn that names "
        "someone the question asks about, -1 for one that names only others (\"I heard that Gustav Garcia's car "
        "is a Mazda\" is not about the speaker's car).",
    )
    supersede_corrections: bool = Field(
        True, description="A dialogue turn that corrects what its speaker said just before (\"oops, I meant "
        "figs\") ranks at least just above the turn it corrects: the pair is found through the statement, "
        "which the question resembles, and the correction is the answer.",
    )
    recency_weight: float = Field(
        0.05, ge=0, description="Weight of the temporal bundle's recency, 2^(-age / half-life): among "
        "near-equal matches the later one (a correction, a move) wins.",
    )
    informative_weight: float = Field(
        0.6, ge=0, description="Weight of a dialogue turn's specificity (the largest IDF of its words): a "
        "turn that names something rare is likelier to hold a fact than small talk.",
    )
    speaker_rewrite: bool = Field(
        True, description="A question that names a speaker is encoded in that speaker's first person "
        "(\"Where does Ana live?\" as \"Where does I live?\"), the way their own turns are phrased.",
    )
    question_penalty: float = Field(
        1.0, ge=0, description="Taken off memories that are questions (\"where do you live?\"): they ask "
        "for a fact rather than hold one; a dialogue turn's answer is found, and shown, as its neighbour. "
        "On the `train` transcripts (1,000 turns, seeds 0-2) 0.6, 1.0 and 1.5 found the gold turn first "
        "for 54%, 57% and 57% of questions, and in the top 5 for 76% each.",
    )
    neighbour_turns: int = Field(
        0, ge=0, le=8, description="generate() shows a retrieved dialogue turn (one with a speaker) with this "
        "many turns of its conversation before and after it, so that a reply like \"she's called Mochi\" "
        "is read with the question it answers. The default shows the turn alone: the 135M reader, given "
        "the gold turn, answered 71 of 90 `train` dialogue questions with it alone and 53 with one "
        "neighbour each side (BENCHMARKS.md, Conversations); a larger reader may use more.",
    )
    relative_gate: float = Field(
        0.8, ge=0, le=1,
        description="generate() leaves out retrieved memories whose fused score is below this "
        "fraction of the best one: a small reader answers worse with unrelated facts in its prompt.",
    )
    dialogue_relative_gate: float = Field(
        1.0, ge=0, le=1,
        description="`relative_gate` in a store that holds dialogue turns. 1 shows the best turn only (and "
        "any exact tie): on the `train` transcripts, each turn shown alone, the 135M reader answered 27 of "
        "90 questions with gate 0.8 and 44 with 1 (BENCHMARKS.md, Conversations).",
    )

    def for_store(self, dialogue: bool) -> RetrievalConfig:
        """The settings a store uses: in one that holds dialogue turns, each `dialogue_*` value
        takes the place of its fact-store counterpart."""
        if not dialogue:
            return self
        return self.model_copy(update={"candidates": self.dialogue_candidates, "lexical_weight":
                                       self.dialogue_lexical_weight, "relative_gate": self.dialogue_relative_gate})


class PrefixConfig(_Frozen):
    slots: int = Field(4, ge=1, le=64, description="Prefix slots L_mem injected before the prompt.")
    d_attn: int = Field(64, ge=8, description="Width of each bundle's query/key space.")
    temperature: float = Field(0.05, gt=0, description="Softmax temperature of cross-bundle attention.")
    seed: int = Field(0, description="Seed of the untrained channel's initial weights.")
    salient_tokens: int = Field(
        0, ge=0, le=64, description="Tokens of each retrieved memory's most surprising words given to the prefix as "
        "slots of their own (0: pooled slots only). Trained channel weights carry their own value, which wins; "
        "untrained, these slots cost hybrid answers (BENCHMARKS.md), so the default is 0.")
    salient_order: Literal["surprisal", "content_first"] = Field(
        "surprisal", description="How a memory's salient words are ranked while `salient_tokens` has room: by the "
        "backbone's surprisal alone, as the shipped channel was trained; or every content word before any function "
        "word (\"I\", \"my\", \"is\"), each kind by surprisal, which keeps a long memory's predictable names "
        "(\"named Max\") that surprisal leaves out. Trained weights that record the order they were trained with use "
        "it (the shipped ones do: surprisal). With the 8-token channel shipped before, content_first answered more "
        "of the hand-written sessions' questions and fewer of the held-out synthetic users' in prefix mode, and a "
        "channel trained with it answered fewer (BENCHMARKS.md, \"A long memory's salient words\").")
    salient_memories: int = Field(
        1, ge=0, le=64, description="Give the prefix the salient words of only the n retrieved memories the store "
        "chooses (see choice_retrieval_weight; 0: of every retrieved memory). Beside the right memory's words the "
        "reader answers from the others' as readily; with the 8-token channel shipped before, 1 answered more held-out "
        "questions in prefix and hybrid modes than 0 (BENCHMARKS.md, \"Training the memory channel\").")
    hybrid_text: Literal["chosen", "retrieved", "chosen_first"] = Field(
        "chosen", description="What `hybrid`'s prompt shows of the retrieved memories: the one the store "
        "chooses (see choice_retrieval_weight) only, all of them in retrieval order, or all with the chosen one first. "
        "Beside the right memory the reader answers from the others as readily; with the 8-token channel shipped "
        "before, \"chosen\" answered more held-out questions than the other two (BENCHMARKS.md, \"Training the "
        "memory channel\").")
    choice_retrieval_weight: float = Field(
        14.0, ge=0, description="Where `prefix` and `hybrid` keep some retrieved memories (salient_memories, "
        "hybrid_text), they keep those of most log(channel relevance) + this weight x retrieval's fused score; 0: the "
        "channel's attention alone. The two are right on different questions; 14 was chosen on validation users "
        "(BENCHMARKS.md, \"Training the memory channel\").")


ANSWER_TIME_PREFIX = {"salient_tokens", "salient_order", "salient_memories", "hybrid_text", "choice_retrieval_weight"}  # answer time only


class MemoryConfig(_Frozen):
    """Everything that shapes how memories are encoded, retrieved and injected."""

    embedder: str = Field(
        "all-minilm-l6-v2", description="Sentence encoder of the topic and context bundles."
    )
    context_turns: int = Field(3, ge=0, description="Earlier turns of a session the context bundle reads.")
    max_context_tokens: int = Field(
        2048, ge=128, description="Prompt budget in backbone tokens (capped by the backbone's own)."
    )
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    kakeya: KakeyaConfig = Field(default_factory=KakeyaConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    timeline_tokens_per_day: float = Field(
        0.0, ge=0, description="For backbones whose rotary phases read time (SPCE): memories in the prompt are "
        "shown oldest first and each memory's tokens are placed this many token steps further back per day of "
        "its age, so its write time reaches the phases. 0 keeps plain token positions (a converted model then "
        "answers exactly as its source). Other backbones ignore it.")
    system_prompt: str | None = Field(
        None, description="System message for generation; None keeps the chat template's default."
    )

    @field_validator("embedder")
    @classmethod
    def _known_embedder(cls, v: str) -> str:
        if v != "all-minilm-l6-v2":
            raise ValueError(f"unknown embedder {v!r}; the supported one is 'all-minilm-l6-v2'")
        return v

    @classmethod
    def from_stored(cls, text: str, answer_time: Iterable[str] = ()) -> tuple[MemoryConfig, list[str]]:
        """Read the config a store saved, perhaps by a newer version of the library.

        Args:
            text: the stored config (JSON).
            answer_time: dotted names of the settings the writing version read only when searching
                and answering (`answer_time_settings`, kept beside the config); a name covers the
                settings under it.

        Returns:
            The config and the dotted names of the settings left out: unknown ones under
            `SEARCH_ONLY` sections or named in `answer_time`, which change only how searches rank
            and answers are made (this version does both as it knows how).

        Raises:
            ValueError: the text is not a config (bad JSON, values out of range).
            NewerSettings: unknown settings elsewhere, which may change what the stored bytes mean.
        """
        if not isinstance(text, str | bytes):
            raise ValueError("the store holds no config")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a stored config is a JSON object")
        unknown = _unknown_settings(cls, data)
        safe = set(SEARCH_ONLY) | set(answer_time)
        stored_only = [u for u in unknown if not any(".".join(u.split(".")[:i]) in safe
                                                     for i in range(1, u.count(".") + 2))]
        if stored_only:
            raise NewerSettings(stored_only)
        for name in unknown:
            *path, key = name.split(".")
            node = data
            for part in path:
                node = node[part]
            del node[key]
        return cls.model_validate(data), unknown

    def answer_time_settings(self) -> list[str]:
        """Dotted names of the settings that do not change what a store holds: read only when
        searching and answering. Kept beside a new store's config, so that an older version, which
        may not know some of them, can open the store without them (`from_stored`)."""
        storage = self.storage_fields()
        return sorted([name for name in type(self).model_fields if name not in storage]
                      + [f"prefix.{name}" for name in ANSWER_TIME_PREFIX])

    def storage_fields(self) -> dict:
        """The parts of the config that decide what bytes a store holds."""
        return {"embedder": self.embedder, "context_turns": self.context_turns, "temporal": self.temporal.model_dump(),
                "kakeya": self.kakeya.model_dump(),
                "prefix": self.prefix.model_dump(exclude=ANSWER_TIME_PREFIX)}


class NewerSettings(ValueError):
    """A stored config holds settings this version does not know (`names`, dotted)."""

    def __init__(self, names: list[str]):
        super().__init__(", ".join(names))
        self.names = names


def _unknown_settings(model: type[BaseModel], data: dict, prefix: str = "") -> list[str]:
    """Dotted names of the keys of `data` that `model` (recursively) has no field for."""
    out = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _unknown_settings(field.annotation, value, f"{prefix}{key}.")
    return out
