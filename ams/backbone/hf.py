"""The HuggingFace backbone: any `AutoModelForCausalLM`, frozen, in eval mode.

The backbone is the chatbot's own language model. AMS asks four things of it: token counts (for the
context budget), an encoding of a memory in the model's own spaces (pooled last hidden state and a
surprisal-weighted centroid of its input embeddings), its chat prompt, and greedy generation with an
optional prefix of embeddings placed before the prompt (HF `generate(inputs_embeds=...)`, KV cache on).

Glossary: B batch, T tokens, L prefix slots, d model width.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInput
from ..turns import is_function_word

SALIENCE_FRAME = "Something to remember about me:\n"
SALIENT_ORDERS = ("surprisal", "content_first")  # how `salient_ids` ranks a text's words
ENCODE_DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class BackboneEncoding:
    """A batch of texts as the backbone sees them."""

    hidden: Tensor  # (B, d) mean-pooled last-layer hidden state
    salient: Tensor  # (B, d) input-embedding centroid weighted by each token's surprisal


class HFBackbone:
    """A frozen HuggingFace causal LM with its tokenizer.

    Args:
        model: the causal LM; it is put in eval mode and its parameters stop requiring grad.
        tokenizer: its tokenizer; a chat template is used when it has one.
        name: the name the backbone was asked for by (shown to users, stored in the store).
        encode_dtype: precision of the forward passes that encode memories (`encode`): "float32",
            "bfloat16" (a bf16 copy of the model, made on the first `encode`), or "auto": bf16 where
            the CPU multiplies bf16 natively (AVX512-BF16 or AMX) and the model is fp32, else the
            model's own. On such a CPU bf16 encodes SmolLM2-135M about twice as fast; encodings keep
            a cosine of 0.9994 or more to fp32 (BENCHMARKS.md, "Write throughput"). Generation
            always runs the model as loaded.

    Raises:
        InvalidInput: an unknown `encode_dtype`, or "bfloat16" for an SPCE model (its rotary
            phases need fp32).
    """

    def __init__(self, model, tokenizer, *, name: str, encode_dtype: str = "auto") -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name
        cfg = model.config
        self.d_model: int = int(cfg.hidden_size)
        self.max_context: int = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
        emb = self.model.get_input_embeddings().weight  # (V, d)
        self.token_embedding_norm: float = float(emb.detach().float().norm(dim=-1).mean())
        self.identity: str = _fingerprint(cfg, emb)
        self._eos_ids = _eos_ids(model, tokenizer)
        # SPCE models read each token's absolute time (fp64) for their rotary phases
        self.takes_times: bool = getattr(cfg, "model_type", None) == "spce"
        self.encode_dtype: torch.dtype = self._resolve_encode_dtype(encode_dtype)
        self._encoder = None  # the encoding copy, when encode_dtype is not the model's own
        self._encoder_lock = threading.Lock()  # Memory handles in several threads share a backbone

    def _resolve_encode_dtype(self, choice: str) -> torch.dtype:
        if choice not in ENCODE_DTYPES:
            raise InvalidInput(f"encode_dtype must be one of {ENCODE_DTYPES}, not {choice!r}")
        own = self.model.get_input_embeddings().weight.dtype
        if choice == "auto":
            native = own == torch.float32 and not self.takes_times and _native_bf16(self.device)
            return torch.bfloat16 if native else own
        if choice == "bfloat16" and self.takes_times:
            raise InvalidInput("an SPCE backbone encodes in its own precision: its rotary phases need fp32")
        return getattr(torch, choice)

    @property
    def _encoding_model(self):
        if self.encode_dtype == self.model.get_input_embeddings().weight.dtype:
            return self.model
        with self._encoder_lock:  # made once, however many threads ask for it first
            if self._encoder is None:  # parameters are converted one by one: no second fp32 model at any time
                cast = {id(p): torch.nn.Parameter(p.detach().to(self.encode_dtype), requires_grad=False)
                        for p in self.model.parameters()}
                self._encoder = copy.deepcopy(self.model, cast).to(self.encode_dtype)  # then the buffers
        return self._encoder

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def chat_ids(self, user_text: str, *, system: str | None = None) -> list[int]:
        """Prompt ids for one user turn, through the model's chat template when it has one."""
        if self.tokenizer.chat_template:
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": user_text}
            ]
            out = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
            return list(ids)
        # base models: a plain question/answer frame
        head = f"{system}\n\n" if system else ""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self.tokenize(f"{head}Question: {user_text}\nAnswer:")

    def chat_spans(self, user_text: str, *, system: str | None = None) -> tuple[list[int], list[int]] | None:
        """`chat_ids(user_text)` with, per token, the index in `user_text` where it starts.

        Tokens of the template before `user_text` get -1, those after it `len(user_text)`. None when
        the tokenizer cannot give offsets that reproduce `chat_ids` exactly.
        """
        ids = self.chat_ids(user_text, system=system)
        if not getattr(self.tokenizer, "is_fast", False):
            return None
        if self.tokenizer.chat_template:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
            prompt = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            lead = []
        else:
            head = f"{system}\n\n" if system else ""
            prompt = f"{head}Question: {user_text}\nAnswer:"
            lead = [-1] if self.tokenizer.bos_token_id is not None else []
        at = prompt.find(user_text)
        enc = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        if at < 0 or len(lead) + len(enc["input_ids"]) != len(ids) or list(enc["input_ids"]) != ids[len(lead):]:
            return None
        starts = [-1 if a < at else min(a - at, len(user_text)) for a, _ in enc["offset_mapping"]]
        return ids, lead + starts

    def answer_ids(self, text: str, *, ended: bool = True) -> list[int]:
        """Token ids of `text` as the model's reply, with the end of its turn unless `ended` is
        False (a reply cut at the token limit): after a chat template's assistant header, else
        after the plain frame's "Answer:"."""
        if self.tokenizer.chat_template:
            return self.tokenize(text) + ([self.tokenizer.eos_token_id] if ended else [])
        return self.tokenize(f" {text}\n" if ended else f" {text}")

    # -- encoding -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, texts: list[str], *, batch_size: int = 16) -> BackboneEncoding:
        """Encode memories in the backbone's own spaces.

        Returns:
            `BackboneEncoding` with `hidden` (B, d), the mean of the last layer's hidden states, and
            `salient` (B, d), the mean of the input embeddings weighted by each token's surprisal
            -log p(x_t | x_<t) under the model: content words weigh more than function words, with
            no corpus statistics needed.
        """
        hiddens, salients = [], []
        model, emb = self._encoding_model, self.model.get_input_embeddings()  # the centroid reads exact rows
        seqs = [self._with_bos(self.tokenize(t)) for t in texts]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # batches of similar lengths pad less
        for i in range(0, len(texts), batch_size):
            chunk = [seqs[j] for j in order[i : i + batch_size]]
            ids, mask = self._right_pad(chunk)  # (B, T)
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            h = out.hidden_states[-1].float()  # (B, T, d)
            m = mask.unsqueeze(-1).float()  # (B, T, 1)
            hiddens.append((h * m).sum(1) / m.sum(1).clamp_min(1))
            surprisal = self._surprisal(out.logits, ids)  # (B, T-1): token t+1
            w = torch.zeros_like(mask, dtype=torch.float32)
            w[:, 1:] = surprisal * mask[:, 1:]  # the BOS token carries no content
            if self._bos is None:  # no BOS: the first token has no prediction; weigh it as the mean
                w[:, 0] = surprisal.mean(1)
            e = emb(ids).float()  # (B, T, d)
            salients.append((w.unsqueeze(-1) * e).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6))
        back = torch.argsort(torch.tensor(order))  # rows back into the callers' order
        return BackboneEncoding(torch.cat(hiddens)[back], torch.cat(salients)[back])

    @torch.no_grad()
    def salient_ids(self, texts: list[str], m: int, *, order: str = "surprisal",
                    batch_size: int = 16) -> list[list[int]]:
        """Per text, the token ids of its most surprising words, at most `m` tokens, in text order.

        A word is a run of tokens that starts at whitespace (punctuation stands alone and is never
        chosen); its score is the largest surprisal -log p(x_t | x_<t) of its tokens, each text read
        after `SALIENCE_FRAME` so its first words are not all surprises. Words are taken whole, best
        first, while they fit: "I adopted a beagle named Waffles." gives the tokens of "beagle" and
        "Waffles" before those of "named". `order` (`SALIENT_ORDERS`) "surprisal" ranks by surprisal
        alone; "content_first" takes every content word before any function word ("I", "my", "is", "he").
        The texts share padded forward passes of `batch_size`.
        """
        if order not in SALIENT_ORDERS:
            raise InvalidInput(f"order must be one of {SALIENT_ORDERS}, got {order!r}")
        frame = self._with_bos(self.tokenize(SALIENCE_FRAME))
        toks = [self.tokenize(t) for t in texts]
        surprisal: dict[int, list[float]] = {}
        by_length = sorted((i for i, ids in enumerate(toks) if ids), key=lambda i: len(toks[i]))
        for c in range(0, len(by_length), batch_size):
            chunk = by_length[c : c + batch_size]
            ids, mask = self._right_pad([frame + toks[i] for i in chunk])
            s = self._surprisal(self.model(input_ids=ids, attention_mask=mask).logits, ids)  # (B, T-1)
            for row, i in enumerate(chunk):  # the text's tokens are predicted at len(frame) - 1 onwards
                surprisal[i] = s[row, len(frame) - 1 : len(frame) - 1 + len(toks[i])].tolist()
        return [self._pick_words(ids, surprisal[i], m, order == "content_first") if ids else []
                for i, ids in enumerate(toks)]

    def _pick_words(self, ids: list[int], surprisal: list[float], m: int, content_first: bool) -> list[int]:
        """The tokens of a text's most surprising whole words, at most `m`, in text order; with
        `content_first`, function words only where room is left."""
        words: list[list[int]] = []  # token positions
        for i, t in enumerate(ids):
            piece = self.tokenizer.decode([t])
            alnum = any(c.isalnum() for c in piece)
            if not words or piece[:1].isspace() or not alnum or not any(
                    c.isalnum() for c in self.tokenizer.decode([ids[words[-1][-1]]])):
                words.append([i])
            else:
                words[-1].append(i)
        text = [self.decode([ids[i] for i in w]) for w in words]
        scored = sorted((k for k, t in enumerate(text) if any(c.isalnum() for c in t)),
                        key=lambda k: (content_first and is_function_word(text[k]), -max(surprisal[i] for i in words[k])))
        scored = [words[k] for k in scored]
        chosen, room = [], m
        for w in scored:
            if len(w) <= room:
                chosen.append(w)
                room -= len(w)
        return [ids[i] for w in sorted(chosen) for i in w]

    @staticmethod
    def _surprisal(logits: Tensor, ids: Tensor) -> Tensor:
        """-log p(ids[:, t+1] | ids[:, :t+1]) from logits (B, T, V): (B, T-1). The log-sum-exp less
        the target's logit, which reads the logits once where a log-softmax writes a second
        (B, T, V) array; one sequence at a time, in fp32, so each pass stays in cache (the same
        values as the batch at once, and 9% less encoding time: benchmarks/surprisal.py)."""
        out = torch.empty(logits.shape[0], logits.shape[1] - 1, dtype=torch.float32, device=logits.device)
        for b in range(logits.shape[0]):
            lg = logits[b, :-1].float()  # (T-1, V)
            out[b] = torch.logsumexp(lg, -1) - lg.gather(-1, ids[b, 1:, None]).squeeze(-1)
        return out

    @property
    def _bos(self) -> int | None:
        return self.tokenizer.bos_token_id

    def _with_bos(self, ids: list[int]) -> list[int]:
        return ([self._bos] if self._bos is not None else []) + ids

    def _right_pad(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
        T = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (T - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs], device=self.device)
        return ids, mask

    # -- generation -----------------------------------------------------------------------------
    def embed(self, ids: list[int]) -> Tensor:
        """Input embeddings (T, d) of a token sequence."""
        t = torch.tensor(ids, device=self.device)
        return self.model.get_input_embeddings()(t)

    def generate(self, ids: list[int], *, prefix: Tensor | None = None, max_new_tokens: int = 64,
                 times: list[float] | None = None) -> str:
        """Greedy continuation of `ids`, with `prefix` (L, d) embeddings placed before them.

        Args:
            ids: prompt token ids (from `chat_ids`).
            prefix: (L, d) prefix embeddings, or None for a plain prompt.
            max_new_tokens: the most tokens to generate.
            times: the time of each prompt token, for backbones that read it (`takes_times`).

        Returns:
            The generated text, special tokens removed and whitespace stripped.
        """
        return self.generate_batch([ids], prefixes=[prefix], max_new_tokens=max_new_tokens,
                                   times=None if times is None else [times])[0]

    @torch.no_grad()
    def generate_batch(self, prompts: list[list[int]], *, prefixes: list[Tensor | None] | None = None,
                       max_new_tokens: int = 64, times: list[list[float] | None] | None = None,
                       return_ended: bool = False) -> list[str] | tuple[list[str], list[bool]]:
        """Greedy continuations of several prompts in one batch.

        Each row is `[prefix_i; embed(prompt_i)]`, left-padded with the pad token's embedding under
        a zero attention mask, so every row ends where its generation starts. Positions follow the
        mask, so a row's answer is its unbatched answer up to float rounding in the padded matmuls.

        Args:
            prompts: B prompt token id lists.
            prefixes: B entries of (L_i, d) prefix embeddings or None; None for no prefixes at all.
            max_new_tokens: the most tokens generated per row.
            times: B entries of per-token times of the prompt (non-decreasing, in token units) or
                None (the token index); only for backbones that read times (`takes_times`). A
                row's prefix slots sit just before its first token; new tokens follow its last
                one a unit apart.
            return_ended: also return, per row, whether the model ended its turn (an end token)
                before `max_new_tokens` cut it off.

        Returns:
            B texts, special tokens removed and whitespace stripped; with `return_ended`, the
            texts and B flags.

        Raises:
            InvalidInput: a row's prompt, prefix and new tokens exceed the backbone's context; times
                for a backbone that does not read them, or of the wrong length.
        """
        if not prompts:
            return ([], []) if return_ended else []
        prefixes = prefixes if prefixes is not None else [None] * len(prompts)
        if len(prefixes) != len(prompts):
            raise InvalidInput(f"{len(prompts)} prompts but {len(prefixes)} prefixes")
        position = None
        if times is not None and any(t is not None for t in times):
            position = self._positions(prompts, prefixes, times)
        rows = []
        for ids, prefix in zip(prompts, prefixes):
            if len(ids) + (0 if prefix is None else prefix.shape[0]) + max_new_tokens > self.max_context:
                raise InvalidInput(
                    f"prompt of {len(ids)} tokens plus {max_new_tokens} new tokens exceeds the "
                    f"backbone's context of {self.max_context}"
                )
            x = self.embed(ids)  # (T_i, d)
            rows.append(x if prefix is None else torch.cat([prefix.to(x.dtype), x]))  # (L_i + T_i, d)
        T = max(r.shape[0] for r in rows)
        pad = self.embed([self.tokenizer.pad_token_id])  # (1, d)
        x = torch.stack([torch.cat([pad.expand(T - r.shape[0], -1), r]) for r in rows])  # (B, T, d)
        mask = torch.tensor([[0] * (T - r.shape[0]) + [1] * r.shape[0] for r in rows], device=self.device)
        extra = {} if position is None else {"position_ids": position}  # generate() extends them by one a token
        out = self.model.generate(
            inputs_embeds=x, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            num_beams=1, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._eos_ids,
            temperature=None, top_p=None, top_k=None, **extra,
        )  # (B, new): with inputs_embeds only the new tokens come back
        texts = [self.decode(o.tolist()).strip() for o in out]
        ended = torch.isin(out, torch.tensor(self._eos_ids, device=out.device)).any(dim=1).tolist()
        if not self.tokenizer.chat_template:  # a chat model ends its turn with an end token; a base
            # model in the "Question: ... Answer:" frame runs on into the next question: its answer
            # is its first non-empty line (a leading line break is not an answer)
            ended = ["\n" in t or e for t, e in zip(texts, ended)]
            texts = [t.split("\n")[0].strip() for t in texts]
        return (texts, ended) if return_ended else texts

    def _positions(self, prompts: list[list[int]], prefixes: list[Tensor | None],
                   times: list[list[float] | None]) -> Tensor:
        """(B, T) fp64 times of the left-padded rows `[pad; prefix; prompt]`, as `generate_batch` lays them."""
        if not self.takes_times:
            raise InvalidInput(f"backbone {self.name!r} does not read token times (only SPCE backbones do)")
        if len(times) != len(prompts):
            raise InvalidInput(f"{len(prompts)} prompts but {len(times)} time lists")
        rows = []
        for ids, prefix, t in zip(prompts, prefixes, times):
            t = torch.arange(len(ids), dtype=torch.float64) if t is None else torch.as_tensor(t, dtype=torch.float64)
            if t.shape != (len(ids),) or not bool(torch.isfinite(t).all()) or bool((t.diff() < 0).any()):
                raise InvalidInput(f"times must be {len(ids)} finite, non-decreasing numbers, one per prompt token")
            L = 0 if prefix is None else prefix.shape[0]
            rows.append(torch.cat([t[0] - torch.arange(L, 0, -1, dtype=torch.float64), t]))  # (L + T_i,)
        T = max(len(r) for r in rows)
        return torch.stack([torch.cat([r[:1].expand(T - len(r)), r]) for r in rows]).to(self.device)  # pads: masked


def _eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    gen = getattr(model, "generation_config", None)
    for v in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(v, int):
            ids.add(v)
        elif v:
            ids.update(v)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if end is not None:
        ids.add(end)
    return sorted(ids)


def _native_bf16(device: torch.device) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (elsewhere bf16 is emulated, and slow)."""
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def _fingerprint(cfg, emb: Tensor) -> str:
    """A short hash of the architecture and the first embedding rows: equal weights, equal identity."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    h = hashlib.sha256(repr([getattr(cfg, k, None) for k in keys]).encode())
    h.update(emb[:64].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
