"""A tiktoken encoding of SmolLM2's byte-level BPE, built offline from the shipped GGUF file.

A converted SPCE model keeps its source's HF tokenizer; a model trained from scratch uses this one.
The GGUF holds the vocabulary as GPT-2 byte-level strings ("Ġ" for a space byte) and the merges in
priority order. tiktoken merges the adjacent pair whose concatenation has the lowest rank, so
merge i becomes rank 256 + i of the bytes it creates, and single bytes take ranks 0..255: the
same pieces as the HF BPE. Ranks map back to the GGUF's token ids, so ids agree with the HF
tokenizer. Bytes with no token in the vocabulary (six ASCII control characters, and bytes that only
occur in rare 4-byte characters) are dropped, as the HF tokenizer drops them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

# GPT-2's pre-tokenizer, which the GGUF's byte-level BPE ("smollm" pre-tokenizer) uses
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable stand-in character -> byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def read_gguf_vocab(path: Path) -> tuple[list[str], list[int], list[str], int | None, int | None]:
    """(tokens, token types, merges, bos id, eos id) from a GGUF file's tokenizer fields."""
    from gguf import GGUFReader

    r = GGUFReader(path)

    def strings(key: str) -> list[str]:
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key: str) -> int | None:
        f = r.fields.get(key)
        return int(f.parts[-1][0]) if f is not None else None

    types = r.fields["tokenizer.ggml.token_type"]
    return (strings("tokenizer.ggml.tokens"), [int(types.parts[i][0]) for i in types.data],
            strings("tokenizer.ggml.merges"), scalar("tokenizer.ggml.bos_token_id"), scalar("tokenizer.ggml.eos_token_id"))


class SpceTokenizer:
    """Encode and decode with a tiktoken BPE, in the source vocabulary's token ids.

    Args:
        gguf_path: a GGUF file with a GPT-2-style byte-level BPE; default the shipped SmolLM2's.

    Raises:
        ValueError: the file's vocabulary is not a byte-level BPE this class can rank.
    """

    def __init__(self, gguf_path: str | Path | None = None):
        import tiktoken

        if gguf_path is None:
            from ..registry import shipped_gguf_path

            gguf_path = shipped_gguf_path("smollm2-135m-instruct")
        tokens, types, merges, self.bos_token_id, self.eos_token_id = read_gguf_vocab(Path(gguf_path))
        dec = byte_decoder()

        def to_bytes(tok: str) -> bytes:
            return bytes(dec[c] for c in tok)

        ids = {t: i for i, t in enumerate(tokens)}
        ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
        rank_to_id = np.full(256 + len(merges), -1, dtype=np.int64)  # -1: a byte with no token
        for i, t in enumerate(tokens):
            if len(t) == 1 and t in dec and types[i] == 1:
                rank_to_id[dec[t]] = i
        for i, m in enumerate(merges):
            a, b = m.split(" ")
            merged = a + b
            if merged not in ids or to_bytes(merged) in ranks:
                raise ValueError(f"merge {i} ({m!r}) does not create a new vocabulary token")
            ranks[to_bytes(merged)] = 256 + i
            rank_to_id[256 + i] = ids[merged]
        special = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3}  # control tokens
        offset = len(rank_to_id)
        self.special_tokens = special
        self.encoding = tiktoken.Encoding(
            name=f"spce-{Path(gguf_path).stem}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
            special_tokens={t: offset + j for j, t in enumerate(special)},
        )
        self.rank_to_id = np.concatenate([rank_to_id, np.array(list(special.values()), dtype=np.int64)])
        self.id_to_rank = np.full(len(tokens), -1, dtype=np.int64)
        known = self.rank_to_id >= 0
        self.id_to_rank[self.rank_to_id[known]] = np.nonzero(known)[0]
        self.vocab_size = len(tokens)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of `text`; special-token text is encoded as plain text unless `allow_special`."""
        ranks = self.encoding.encode(text, allowed_special="all" if allow_special else set(), disallowed_special=())
        ids = self.rank_to_id[np.asarray(ranks, dtype=np.int64)]
        return ids[ids >= 0].tolist()

    def decode(self, ids: list[int]) -> str:
        """Text of token ids; unknown ids raise ValueError."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size or (self.id_to_rank[arr] < 0).any()):
            raise ValueError(f"token ids outside the vocabulary of {self.vocab_size}")
        return self.encoding.decode(self.id_to_rank[arr].tolist())


@lru_cache(maxsize=2)
def shipped_tokenizer() -> SpceTokenizer:
    """The tiktoken encoding of the shipped SmolLM2 vocabulary (built once per process)."""
    return SpceTokenizer()
