"""Training the memory channel: cross-bundle attention learns to carry facts into the prefix.

What trains: the query heads, the per-bundle value maps, the slot lifts, the LayerNorm, the
prefix scale, and the salient-token map and scale (`CrossBundleAttention`). The backbone stays
frozen; gradients reach the channel through it. The bundles' geometry and the stored fields are not trained, so a store written before
training works with trained weights, and switching weights never re-encodes a memory.

Data comes from the synthetic generator, `train` split only: per episode a fresh store (a real
SQLite file) receives one user's facts through `Memory.write_many`, then each question is retrieved
exactly as `Memory.generate` retrieves it, and what the channel would read (the question's points
and hidden state, the top-k memories' directions and decoded fibers) is kept with the prompt each
mode would show and the answer entity. Validation uses the `heldout` split (unseen templates,
values and names).

Losses:
- answer NLL through the prefix, in `prefix` mode (question only after the prefix) or also in
  `hybrid` mode (memory texts in the prompt too), steps alternating between the modes trained. The
  default trains `prefix` steps only, and validation measures both modes either way: `hybrid`
  steps teach the prefix less, since the prompt already holds the facts (BENCHMARKS.md). The
  target is, per mode, the answer entity and the end of the turn, or (the default for `prefix`)
  text mode's own greedy answer where it was right: the prefix then carries the fact, and the
  reader keeps answering in its own full sentence, which holds the details a bare entity drops;
- a retrieval term (weight `retrieval_weight`): cross-entropy of the topic and context attention
  over the k retrieved memories toward the gold one, the other k - 1 being hard negatives.

    from ams.train import ChannelTrainConfig, train_channel
    report = train_channel(ChannelTrainConfig(steps=600), out_dir="runs/channel")
    # then: ams.Memory.open("alice.db", weights="runs/channel/channel.safetensors")

The same loop runs on CPU, one GPU, or several under `accelerate launch`, with a progress bar,
periodic validation (NLL and greedy hit-rate), PNG curves and resumable safetensors checkpoints;
once trained, the validation questions are answered again as a store answers them (`store_validation`).
Glossary: B batch, K retrieved memories, L prefix slots, T tokens, A answer tokens, d width.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .attention import RELEVANCE_BUNDLES, CrossBundleAttention, save_channel
from .backbone.hf import SALIENT_ORDERS
from .bundles import BUNDLES
from .checkpoints import load_checkpoint, lr_at, save_checkpoint, save_safetensors
from .errors import InvalidInput

MODES = ("prefix", "hybrid")
TARGETS = ("entity", "text")


@dataclass
class ChannelTrainConfig:
    """Args:
        backbone: the frozen backbone the channel is trained for (its identity goes in the weights).
        salient_tokens: tokens of each retrieved memory's salient words given to the prefix (0:
            pooled slots only); saved with the weights, which a store then uses.
        salient_memories: train with the salient words of only the n memories the channel attends
            to most (0: every retrieved memory's). Recorded in the recipe; at answer time the store's
            own setting (`PrefixConfig.salient_memories`) decides.
        holder_weight: the holder channel's weight when the examples' memories are retrieved
            (`RetrievalConfig.holder_weight`). 0, as the shipped channel's examples were retrieved
            (the channel predates the holder channel), keeps the recipe remaking it; stores retrieve
            with the holder channel on.
        salient_order: how each memory's salient words are ranked (`PrefixConfig.salient_order`):
            "surprisal", as the shipped channel was trained and stores read by default, or
            "content_first" (trained once with 8 tokens: fewer `prefix` answers on validation users; BENCHMARKS.md).
        train_episodes: synthetic users (fresh stores) of the train split.
        val_episodes: synthetic users of the held-out split.
        facts: facts per episode, cycled over the episodes.
        queries: questions per episode.
        k: memories retrieved per question, as at answer time.
        modes: injection modes trained, alternating by step.
        prefix_target, hybrid_target: what `prefix` and `hybrid` steps teach the reader to answer:
            "entity" (the answer entity and the end of the turn), or "text" (text mode's own greedy
            answer where it was right, else the entity). A text target is the reader's own sentence:
            in `hybrid` the prefix learns to keep what the prompt alone gets right and to fix what it
            gets wrong; in `prefix` it learns to answer in the form the reader uses with the facts in
            its prompt, not in the training target's bare entity.
        steps, batch_size, lr, warmup, weight_decay, grad_clip: the optimiser; cosine decay after warm-up.
        retrieval_weight: weight of the attention-toward-gold term (0 leaves it out).
        eval_every: steps between validations (and at the start and the end).
        eval_answers: held-out questions answered greedily per mode at each validation.
        max_new_tokens: tokens generated when validating answers.
        checkpoint_every: steps between checkpoints.
        seed: seeds the episodes, the initial weights' noise and the batch order.
    """

    backbone: str = "smollm2-135m-instruct"
    salient_tokens: int = 12
    salient_memories: int = 0
    holder_weight: float = 0.0
    salient_order: str = "surprisal"
    train_episodes: int = 80
    val_episodes: int = 8
    facts: tuple[int, ...] = (20, 50)
    queries: int = 20
    k: int = 3
    modes: tuple[str, ...] = ("prefix",)  # prefix steps only: see BENCHMARKS.md, "Training the memory channel"
    prefix_target: str = "text"  # the reader's own sentence: see BENCHMARKS.md, "Training the memory channel"
    hybrid_target: str = "entity"
    steps: int = 400
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    retrieval_weight: float = 1.0
    eval_every: int = 100
    eval_answers: int = 60
    max_new_tokens: int = 30
    checkpoint_every: int = 100
    seed: int = 0
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise InvalidInput(f"modes must be a non-empty subset of {MODES}, got {list(self.modes)}")
        for name in ("train_episodes", "val_episodes", "queries", "k", "steps", "batch_size", "eval_every",
                     "checkpoint_every", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"{name} must be at least 1")
        if not self.facts or any(not 10 <= n <= 10_000 for n in self.facts):
            raise InvalidInput("facts per episode must lie between 10 and 10,000")
        if not 0 <= self.salient_tokens <= 64 or not 0 <= self.salient_memories <= 64:
            raise InvalidInput("salient_tokens and salient_memories must lie between 0 and 64")
        for name in ("prefix_target", "hybrid_target"):
            if getattr(self, name) not in TARGETS:
                raise InvalidInput(f"{name} must be one of {TARGETS}, got {getattr(self, name)!r}")
        if self.salient_order not in SALIENT_ORDERS:
            raise InvalidInput(f"salient_order must be one of {SALIENT_ORDERS}, got {self.salient_order!r}")
        if self.lr <= 0 or self.retrieval_weight < 0 or self.holder_weight < 0:
            raise InvalidInput("lr must be positive, and retrieval_weight and holder_weight non-negative")
        self.facts, self.modes = tuple(self.facts), tuple(self.modes)

    def target_kind(self, mode: str) -> str:
        """The target kind of a step in `mode`."""
        return self.prefix_target if mode == "prefix" else self.hybrid_target

    @property
    def example_settings(self) -> dict:
        """What building the examples depends on beyond the users and questions."""
        return {"salient_tokens": self.salient_tokens, "holder_weight": self.holder_weight,
                "salient_order": self.salient_order}

    @property
    def needs_text_answers(self) -> bool:
        return any(self.target_kind(m) == "text" for m in self.modes)


@dataclass
class Example:
    """One question as the channel sees it at answer time (unbatched tensors)."""

    query: str
    inputs: dict[str, Any]  # q_base {b: (d_base,)}, q_hidden (d,), dirn {b: (K, d_base)}, fiber {b: (K, d_fiber)},
    #                         token_ids (S,), token_memory (S,): see `Memory._prefix_inputs`
    prompts: dict[str, list[int]]  # mode -> prompt ids
    answer: list[int]  # answer entity and end of turn
    gold: int  # index of the gold memory among the K retrieved, -1 when retrieval missed it
    keywords: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    # text mode's greedy answer and end of turn where it was a hit, [] where it missed, None until
    # `add_text_answers` ran: the target of steps whose target kind is "text"
    text_answer: list[int] | None = None

    def target(self, kind: str = "entity") -> list[int]:
        """The answer tokens a step with target `kind` trains toward: text mode's own right answer
        for "text" where there is one, else the entity."""
        return self.text_answer if kind == "text" and self.text_answer else self.answer


# examples settings that files built before the setting existed did not record, and the value they were built with
UNRECORDED = {"holder_weight": 0.0, "salient_order": "surprisal"}
VAL_SEEDS = 10_000  # validation users' session seeds start here: never a benchmark's session (seeds 0, 1, ...)


def build_examples(backbone: str, split: str, episodes: int, *, facts: tuple[int, ...], queries: int, k: int,
                   seed: int, salient_tokens: int = 8, holder_weight: float = 0.0, salient_order: str = "surprisal",
                   first_seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[Example]:
    """Write synthetic episodes of `split` to fresh stores and record each question's channel inputs.

    Args:
        backbone: backbone name, as for `Memory.open`.
        split: "train" or "heldout".
        episodes: synthetic users; episode e has `facts[e % len(facts)]` facts and session seed
            `seed * 100003 + first_seed + e`.
        queries: questions per episode.
        k: memories retrieved per question.
        salient_tokens: salient-word tokens per retrieved memory in the prefix inputs.
        holder_weight: `RetrievalConfig.holder_weight` of the episodes' stores.
        salient_order: `PrefixConfig.salient_order` of the episodes' stores.
        progress: called with the number of facts and questions done, as they are.
    """
    from .bench.synthetic import generate_session
    from .bench.viability import write_session
    from .memory import Memory

    out: list[Example] = []
    for e in range(episodes):
        session = generate_session(facts[e % len(facts)], seed=seed * 100_003 + first_seed + e, split=split,
                                   n_queries=queries)
        config = _config(salient_tokens, holder_weight, salient_order)
        with tempfile.TemporaryDirectory() as tmp, Memory.open(Path(tmp) / "episode.db", backbone=backbone,
                                                                config=config, weights="untrained") as mem:
            memory_of, now = write_session(mem, session)
            if progress:
                progress(len(memory_of))
            for q in session.queries:
                gold_ids = {memory_of[f] for f in q.fact_ids if f in memory_of}
                if not q.keywords or not gold_ids:
                    continue
                out.append(_example(mem, q, gold_ids, k, now))
            if progress:
                progress(len(session.queries))
    return out


def _example(mem, q, gold_ids: set[str], k: int, now: float) -> Example:
    """The channel's view of one question, through the same retrieval and prompt as `generate`."""
    plan = mem._plan(q.text, "hybrid", k, 30, None, None, now, example=True)
    if plan.inputs is None:
        raise ValueError(f"nothing was retrieved for {q.text!r}: an episode's store holds no memories")
    gold = next((i for i, r in enumerate(plan.rows) if mem._ids[r] in gold_ids), -1)
    bb = mem.backbone
    return Example(
        query=q.text, inputs=plan.inputs,
        prompts={"prefix": bb.chat_ids(q.text, system=mem.config.system_prompt), "hybrid": plan.ids},
        answer=bb.answer_ids(q.keywords[0]), gold=gold, keywords=list(q.keywords), forbidden=list(q.forbidden),
    )


def save_examples(examples: list[Example], path: str | Path, settings: dict | None = None) -> None:
    """Examples to one safetensors file: tensors as tensors, the rest as JSON in its metadata, with
    the `settings` they were built with (`examples_settings` reads them back)."""
    tensors, rows = {}, []
    for i, ex in enumerate(examples):
        for key, v in ex.inputs.items():
            for b, t in (v.items() if isinstance(v, dict) else [("", v)]):
                tensors[f"{i}.{key}.{b}"] = t.contiguous()
        rows.append({"query": ex.query, "prompts": ex.prompts, "answer": ex.answer, "gold": ex.gold,
                     "keywords": ex.keywords, "forbidden": ex.forbidden, "text_answer": ex.text_answer})
    save_safetensors(tensors, path, {"format": "ams-channel-examples/1", "examples": json.dumps(rows),
                                     "settings": json.dumps(settings or {})})


def examples_settings(path: str | Path) -> dict:
    """The settings an examples file was built with; {} for files written before they were kept.

    Raises:
        InvalidInput: the file is not a safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("settings", "{}"))
    except Exception as e:
        raise InvalidInput(f"{path} is not a file of channel training examples: {e}") from e


def load_examples(path: str | Path) -> list[Example]:
    """Examples written by `save_examples`.

    Raises:
        InvalidInput: the file is not an examples file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "ams-channel-examples/1":
                raise ValueError(f"format {meta.get('format')!r}")
            rows = json.loads(meta["examples"])
            inputs: list[dict[str, Any]] = [{} for _ in rows]
            for name in f.keys():
                i, key, b = name.split(".", 2)
                t = f.get_tensor(name)
                if b:
                    inputs[int(i)].setdefault(key, {})[b] = t
                else:
                    inputs[int(i)][key] = t
    except Exception as e:
        raise InvalidInput(f"{path} is not a file of channel training examples: {e}") from e
    return [Example(inputs=x, **r) for x, r in zip(inputs, rows)]


def collate(examples: list[Example]) -> dict[str, Any]:
    """Stack channel inputs, padding the K retrieved memories (mask False on padding)."""
    K = max(len(ex.inputs["dirn"]["topic"]) for ex in examples)

    def pad(t: Tensor) -> Tensor:  # (K_i, ...) -> (K, ...)
        return torch.cat([t, t.new_zeros((K - len(t), *t.shape[1:]))])

    return {
        "q_base": {b: torch.stack([ex.inputs["q_base"][b] for ex in examples]) for b in BUNDLES},
        "q_hidden": torch.stack([ex.inputs["q_hidden"] for ex in examples]),
        "dirn": {b: torch.stack([pad(ex.inputs["dirn"][b]) for ex in examples]) for b in BUNDLES},
        "fiber": {b: torch.stack([pad(ex.inputs["fiber"][b]) for ex in examples]) for b in BUNDLES},
        "mask": torch.tensor([[i < len(ex.inputs["dirn"]["topic"]) for i in range(K)] for ex in examples]),
    }


BUILT_BEFORE_OWNERS = ("the examples were built before salient tokens knew their memory, so the prefix cannot "
                       "keep the attended memory's words only: build them again")


def prefixes(channel, bb, examples: list[Example], salient_memories: int = 0) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Each question's prefix (S_i + L, d), salient-token padding dropped, and the attention weights.
    With `salient_memories` n, the salient words of the n memories of most relevance only
    (`CrossBundleAttention.kept_tokens`; a store also weighs retrieval's score: `Memory._choice`)."""
    batch = collate(examples)
    ids = [ex.inputs["token_ids"] for ex in examples]
    S = max(len(i) for i in ids)
    tokens = owner = None
    if S:
        emb = bb.model.get_input_embeddings()
        padded = torch.stack([torch.cat([i, i.new_zeros(S - len(i))]) for i in ids]).to(emb.weight.device)
        tokens = emb(padded)  # (B, S, d)
        if salient_memories:
            if not all("token_memory" in ex.inputs for ex in examples):
                raise InvalidInput(BUILT_BEFORE_OWNERS)
            owner = torch.stack([torch.cat([m, m.new_full((S - len(m),), -1)])
                                 for m in (ex.inputs["token_memory"] for ex in examples)]).to(padded.device)
    prefix, weights = channel(batch["q_base"], batch["q_hidden"], batch["dirn"], batch["fiber"], batch["mask"],
                              tokens=tokens)
    if not S:
        return list(prefix), weights
    keep = torch.stack([torch.arange(S) < len(i) for i in ids]).to(prefix.device)  # (B, S): not the padding
    if owner is not None:  # the salient words of the memories the channel attends to
        keep &= CrossBundleAttention.kept_tokens(CrossBundleAttention.relevance(weights), owner, salient_memories)
    return [torch.cat([p[:S][k], p[S:]]) for k, p in zip(keep, prefix)], weights


def channel_loss(channel, bb, examples: list[Example], mode: str, *, retrieval_weight: float,
                 target: str = "entity", salient_memories: int = 0) -> dict[str, Tensor]:
    """Answer NLL through the prefix (mean over answer tokens, then questions), and the retrieval term.
    The answer is `Example.target(target)`; `salient_memories` as in `prefixes`.

    Each row is `[pad; prefix; prompt; answer]`, left-padded, positions following the mask, so the
    answer tokens are the last ones of every row and only their logits are computed.
    """
    prefix, weights = prefixes(channel, bb, examples, salient_memories)
    emb = bb.model.get_input_embeddings()
    device = emb.weight.device
    answers = [ex.target(target) for ex in examples]
    rows = []
    for ex, answer, p in zip(examples, answers, prefix):
        ids = torch.tensor(ex.prompts[mode] + answer, device=device)
        rows.append(torch.cat([p.to(emb.weight.dtype), emb(ids)]))  # (L + T_i, d)
    T, A = max(len(r) for r in rows), max(len(a) for a in answers)
    pad = emb(torch.tensor([bb.tokenizer.pad_token_id], device=device))  # (1, d)
    x = torch.stack([torch.cat([pad.expand(T - len(r), -1), r]) for r in rows])  # (B, T, d)
    mask = torch.stack([torch.arange(T, device=device) >= T - len(r) for r in rows]).long()  # (B, T)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    logits = bb.model(inputs_embeds=x, attention_mask=mask, position_ids=pos, logits_to_keep=A + 1).logits
    logp = logits[:, :-1].float().log_softmax(-1)  # (B, A, V): position j predicts token T - A + j
    nll = []
    for i, answer in enumerate(answers):
        target = torch.tensor(answer, device=device)
        nll.append(-logp[i, A - len(answer) :].gather(-1, target[:, None]).mean())
    out = {"answer": torch.stack(nll).mean()}
    gold = torch.tensor([ex.gold for ex in examples], device=device)
    has = gold >= 0
    if retrieval_weight > 0 and bool(has.any()):
        terms = [-(weights[b][has].gather(-1, gold[has][:, None]).clamp_min(1e-9).log()).mean()
                 for b in RELEVANCE_BUNDLES]
        out["retrieval"] = torch.stack(terms).mean()
    out["total"] = out["answer"] + retrieval_weight * out.get("retrieval", torch.zeros((), device=device))
    return out


@torch.no_grad()
def answer_hits(channel, bb, examples: list[Example], mode: str, *, max_new_tokens: int,
                batch_size: int = 8, salient_memories: int = 0) -> tuple[float, list[dict]]:
    """Greedy answers with the channel's prefix (`prefixes`), scored by the benchmark's hit rule.
    Mode "text" is the `hybrid` prompt with no prefix: the reference a trained `hybrid` has to beat."""
    from .session import is_hit

    answers = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        prefix = [None] * len(chunk) if mode == "text" else prefixes(channel, bb, chunk, salient_memories)[0]
        texts = bb.generate_batch([ex.prompts["hybrid" if mode == "text" else mode] for ex in chunk],
                                  prefixes=prefix, max_new_tokens=max_new_tokens)
        answers += [{"query": ex.query, "answer": t, "hit": is_hit(t, ex.keywords, ex.forbidden)}
                    for ex, t in zip(chunk, texts)]
    return sum(a["hit"] for a in answers) / max(1, len(answers)), answers


@torch.no_grad()
def add_text_answers(bb, examples: list[Example], *, max_new_tokens: int, batch_size: int = 8,
                     progress: Callable[[int], None] | None = None) -> None:
    """Set each example's `text_answer`: text mode's greedy answer (the `hybrid` prompt, no prefix)
    where it is a hit, [] where it is not. The answer ends the turn only where the model ended it:
    a reply cut at `max_new_tokens` is trained toward its tokens, not toward stopping there."""
    from .session import is_hit

    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        texts, ended = bb.generate_batch([ex.prompts["hybrid"] for ex in chunk], max_new_tokens=max_new_tokens,
                                         return_ended=True)
        for ex, t, e in zip(chunk, texts, ended):
            ex.text_answer = bb.answer_ids(t, ended=e) if is_hit(t, ex.keywords, ex.forbidden) else []
        if progress:
            progress(len(chunk))


@torch.no_grad()
def validate(channel, bb, examples: list[Example], cfg: ChannelTrainConfig, *,
             reference: bool = False) -> dict[str, float]:
    """Held-out NLL per mode (and the retrieval term), and greedy hit-rate on the first
    `eval_answers`, for both modes whichever of them are trained: a channel trained on `prefix`
    steps is also used in `hybrid`. With `reference`, also the `text` hit-rate (no prefix), which
    does not change with training."""
    was = channel.training
    channel.eval()
    out: dict[str, float] = {}
    for mode in MODES:
        losses = [channel_loss(channel, bb, examples[i : i + cfg.batch_size], mode, retrieval_weight=1.0,
                               salient_memories=cfg.salient_memories)
                  for i in range(0, len(examples), cfg.batch_size)]
        out[f"{mode}_nll"] = float(torch.stack([x["answer"] for x in losses]).mean())
        if any("retrieval" in x for x in losses):
            out["retrieval"] = float(torch.stack([x["retrieval"] for x in losses if "retrieval" in x]).mean())
        out[f"{mode}_hit"], _ = answer_hits(channel, bb, examples[: cfg.eval_answers], mode,
                                            max_new_tokens=cfg.max_new_tokens, salient_memories=cfg.salient_memories)
    if reference:
        out["text_hit"], _ = answer_hits(channel, bb, examples[: cfg.eval_answers], "text",
                                         max_new_tokens=cfg.max_new_tokens)
    channel.train(was)
    return out


@torch.no_grad()
def store_validation(weights: str | Path, cfg: ChannelTrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Hit-rates on the validation questions as a store gives them: what users get.

    `validate` reads its examples as training does: retrieved as the recipe's episodes were, the
    prefix from the salient words `salient_memories` names, and `hybrid`'s prompt with every
    retrieved memory. A store retrieves with its own settings, keeps one memory by attention and
    retrieval together, and shows that one in `hybrid` (`PrefixConfig`). Here each validation
    user's facts go into a fresh store opened with `weights` and the default settings, and the
    first `eval_answers` questions (the ones `validate` answers) are asked through
    `Memory.generate_many` in `text`, `prefix` and `hybrid`.

    Returns:
        {"questions": n, "text_hit": ..., "prefix_hit": ..., "hybrid_hit": ..., "answers": [{"query",
        "mode", "answer", "hit"}, ...]}; the modes are asked one after another on each store, as
        `ams bench session-viability` asks them.
    """
    from tqdm.auto import tqdm

    from .bench.synthetic import generate_session
    from .bench.viability import write_session
    from .memory import Memory
    from .session import is_hit

    modes = ("text", *MODES)
    answers: list[dict] = []
    asked = 0
    with tqdm(total=cfg.eval_answers, disable=not progress, desc="answering as a store", unit="question") as bar:
        for e in range(cfg.val_episodes):
            if asked >= cfg.eval_answers:
                break
            session = generate_session(cfg.facts[e % len(cfg.facts)], seed=cfg.seed * 100_003 + VAL_SEEDS + e,
                                       split="heldout", n_queries=cfg.queries)
            with tempfile.TemporaryDirectory() as tmp, Memory.open(Path(tmp) / "validation.db", backbone=cfg.backbone,
                                                                    weights=str(weights)) as mem:
                memory_of, now = write_session(mem, session)
                queries = [q for q in session.queries  # the questions `build_examples` keeps
                           if q.keywords and any(f in memory_of for f in q.fact_ids)][: cfg.eval_answers - asked]
                for mode in modes if queries else ():
                    gens = mem.generate_many([q.text for q in queries], mode=mode, k=cfg.k,
                                             max_new_tokens=cfg.max_new_tokens, now=now)
                    answers += [{"query": q.text, "mode": mode, "answer": g.text,
                                 "hit": is_hit(g.text, q.keywords, q.forbidden)} for q, g in zip(queries, gens)]
            asked += len(queries)
            bar.update(len(queries))
    rates = {f"{m}_hit": sum(a["hit"] for a in answers if a["mode"] == m) / max(1, asked) for m in modes}
    return {"questions": asked, **rates, "answers": answers}


def train_channel(cfg: ChannelTrainConfig, *, out_dir: str | Path, progress: bool = True,
                  data: tuple[list[Example], list[Example]] | None = None, stop_at: int | None = None,
                  store_check: bool = True) -> dict:
    """Train the channel; write `channel.safetensors`, `history.json` and `curves.png` to `out_dir`.

    Args:
        cfg: the recipe.
        out_dir: output directory; a run with a checkpoint there resumes from it. The built
            examples are kept there too (`examples-*.safetensors`) and reused by a later run;
            copy them into a new directory to train another recipe on the same questions.
        progress: progress bars.
        data: (train, validation) examples already built (by `build_examples`); built when None.
        stop_at: stop after this step with a checkpoint (the schedule still spans `cfg.steps`).
        store_check: once trained, answer the validation questions as a store does
            (`store_validation`), kept as the history's "store".

    Returns:
        The history: per step the losses, per validation the held-out metrics, the config, and
        (with `store_check`, once the last step is done) the hit-rates as a store answers.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from .memory import Memory

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    cached = out / "examples-train.safetensors", out / "examples-val.safetensors"
    if data is None and all(p.is_file() for p in cached):  # a resumed run, or the same data again
        for p in cached:  # files from before a setting was kept were built as its first value was
            built = examples_settings(p)
            if any(built.get(k, UNRECORDED.get(k, v)) != v for k, v in cfg.example_settings.items()):
                raise InvalidInput(f"{p} was built with {built}, this recipe needs {cfg.example_settings}: "
                                   "remove the examples files to build them again")
        data = load_examples(cached[0]), load_examples(cached[1])
    if data is None:
        data = _build_data(cfg, progress=progress and acc.is_main_process)
        if acc.is_main_process:
            save_examples(data[0], cached[0], cfg.example_settings)
            save_examples(data[1], cached[1], cfg.example_settings)
    train, val = data
    if not train or not val:
        raise InvalidInput("no training or validation questions were built")
    if cfg.salient_memories and not all("token_memory" in ex.inputs for ex in train + val):
        raise InvalidInput(BUILT_BEFORE_OWNERS)
    # a fresh channel, as Memory builds it: never the one the package ships, which this run may remake
    with Memory.open(":memory:", backbone=cfg.backbone, config=_config(**cfg.example_settings),
                     weights="untrained") as probe:
        bb, channel = probe.backbone, probe.attention
    if cfg.needs_text_answers and any(ex.text_answer is None for ex in train):
        train = [replace(ex) for ex in train]  # answered here: the caller's examples stay as they were
        with tqdm(total=len(train), disable=not progress or not acc.is_main_process, desc="text answers",
                  unit="question") as bar:
            add_text_answers(bb, train, max_new_tokens=cfg.max_new_tokens, progress=bar.update)
        if acc.is_main_process:  # kept with the examples: a resumed run does not answer again
            save_examples(train, cached[0], cfg.example_settings)
    torch.manual_seed(cfg.seed)
    channel.train()
    optimizer = torch.optim.AdamW(channel.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: dict = {"config": _jsonable(asdict(cfg)), "step": [], "loss": [], "answer": [], "retrieval": [],
                     "val": [], "examples": {"train": len(train), "val": len(val),
                                             "train_gold_retrieved": sum(ex.gold >= 0 for ex in train) / len(train),
                                             "val_gold_retrieved": sum(ex.gold >= 0 for ex in val) / len(val)}}
    if all(ex.text_answer is not None for ex in train):
        history["examples"]["train_text_right"] = sum(bool(ex.text_answer) for ex in train) / len(train)
    start = 0
    if (out / "checkpoint" / "state.json").is_file():
        start, history = load_checkpoint(out, channel, optimizer)
    channel, optimizer = acc.prepare(channel, optimizer)
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    if start == 0:
        history["val"].append({"step": 0, **validate(acc.unwrap_model(channel), bb, val, cfg, reference=True)})
        if progress and acc.is_main_process:
            print(_val_line(history["val"][-1]), flush=True)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress or not acc.is_main_process,
               desc="train channel", unit="step")
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        mode = cfg.modes[step % len(cfg.modes)]
        order = random.Random(f"{cfg.seed}:{step // max(1, len(train) // cfg.batch_size)}").sample(
            range(len(train)), len(train))  # a fresh permutation per epoch, seeded: resumes draw the same
        at = (step % max(1, len(train) // cfg.batch_size)) * cfg.batch_size
        batch = [train[i] for i in order[at : at + cfg.batch_size]]
        losses = channel_loss(channel, bb, batch, mode, retrieval_weight=cfg.retrieval_weight,
                              target=cfg.target_kind(mode), salient_memories=cfg.salient_memories)
        acc.backward(losses["total"])
        acc.clip_grad_norm_(channel.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        history["step"].append(done)
        history["loss"].append(losses["total"].item())
        history["answer"].append(losses["answer"].item())
        history["retrieval"].append(losses["retrieval"].item() if "retrieval" in losses else None)
        bar.set_postfix(mode=mode, nll=f"{losses['answer'].item():.3f}")
        if done % cfg.eval_every == 0 or done == cfg.steps:
            row = {"step": done, **validate(acc.unwrap_model(channel), bb, val, cfg)}
            history["val"].append(row)
            bar.write(_val_line(row))
        if acc.is_main_process and (done % cfg.checkpoint_every == 0 or done == end):
            save_checkpoint(out, acc.unwrap_model(channel), optimizer, done, history)
    if acc.is_main_process:
        if end == cfg.steps:
            save_channel(acc.unwrap_model(channel), bb, out / "channel.safetensors", recipe=history["config"],
                         salient_tokens=cfg.salient_tokens, salient_order=cfg.salient_order)
            if store_check:
                history["store"] = store_validation(out / "channel.safetensors", cfg, progress=progress)
                if progress:
                    print("as a store answers: " + _val_line(
                        {k: v for k, v in history["store"].items() if k != "answers"}, "questions"), flush=True)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        plot_history(history, out / "curves.png")
    return history


def _val_line(row: dict, first: str = "step") -> str:
    return f"{first} {row[first]}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != first)


def _build_data(cfg: ChannelTrainConfig, *, progress: bool) -> tuple[list[Example], list[Example]]:
    from tqdm.auto import tqdm

    total = sum(cfg.facts[e % len(cfg.facts)] + cfg.queries for e in range(cfg.train_episodes)) + sum(
        cfg.facts[e % len(cfg.facts)] + cfg.queries for e in range(cfg.val_episodes))
    with tqdm(total=total, disable=not progress, desc="episodes", unit="item") as bar:
        common = dict(facts=cfg.facts, queries=cfg.queries, k=cfg.k, seed=cfg.seed, progress=bar.update,
                      **cfg.example_settings)
        train = build_examples(cfg.backbone, "train", cfg.train_episodes, **common)
        # held-out users that `ams bench session-viability` never writes (it uses seed 0 by default):
        # the benchmark stays a test the recipe was not validated on
        val = build_examples(cfg.backbone, "heldout", cfg.val_episodes, first_seed=VAL_SEEDS, **common)
    return train, val


def _config(salient_tokens: int, holder_weight: float, salient_order: str):
    from .config import MemoryConfig, PrefixConfig, RetrievalConfig

    return MemoryConfig(prefix=PrefixConfig(salient_tokens=salient_tokens, salient_order=salient_order),
                        retrieval=RetrievalConfig(holder_weight=holder_weight))


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def plot_history(history: dict, path: str | Path) -> None:
    """Training NLL (smoothed), held-out NLL and held-out hit-rate per mode, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    loss = torch.tensor(history["answer"] or [float("nan")])
    k = max(1, len(loss) // 30)
    smooth = loss.unfold(0, k, 1).mean(1) if len(loss) >= k else loss
    ax.plot(history["step"][k - 1 :] or [0], smooth.tolist(), color="0.6", lw=1, label="train answer NLL")
    val = history["val"]
    for i, mode in enumerate(MODES):
        rows = [v for v in val if f"{mode}_nll" in v]  # older runs validated the trained modes only
        ax.plot([v["step"] for v in rows], [v[f"{mode}_nll"] for v in rows], "o-", color=f"C{i}", label=f"{mode} held-out NLL")
        bx.plot([v["step"] for v in rows], [v[f"{mode}_hit"] for v in rows], "o-", color=f"C{i}", label=mode)
    text = [v["text_hit"] for v in val if "text_hit" in v]
    if text:
        bx.axhline(text[0], color="0.4", ls="--", lw=1, label="text (no prefix)")
    if "store" in history and val:  # the trained channel answering as a store does
        at = val[-1]["step"]
        for i, mode in enumerate(MODES):
            bx.plot([at], [history["store"][f"{mode}_hit"]], "*", ms=12, color=f"C{i}",
                    label=f"{mode}, as a store answers")
        bx.plot([at], [history["store"]["text_hit"]], "*", ms=12, color="0.4", label="text, as a store answers")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / answer token")
    ax.grid(alpha=0.3)
    ax.legend()
    bx.set_xlabel("step")
    bx.set_ylabel("held-out hit-rate (greedy)")
    bx.set_ylim(0, 1)
    bx.grid(alpha=0.3)
    bx.legend()
    fig.suptitle("memory channel training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
