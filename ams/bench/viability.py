"""The session-viability benchmark: every injection mode, swept over the number of facts N.

For each N a fresh SQLite store (a real file) is written with the session's facts through
`Memory.write_many`, then every question is asked in every mode through `Memory.generate`: what is
measured is what users get. `oracle` asks with only the gold fact(s) in the prompt (the ceiling for
retrieval-based modes); `none` is the floor.

Metrics per (N, mode): hit-rate under the whole-word rule and under the original substring rule,
recall@1 and recall@k of the gold fact (modes that retrieve), mean prompt tokens including prefix
slots, retrieve and generate ms (p50, p95), write ms per memory, bytes per memory of the SQLite
file, peak RSS, and the share of `full` prompts that were left-truncated. Every answer is kept in
the JSON report with its hit verdicts, so a reader can see why a hit is a hit.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import MemoryConfig
from ..errors import InvalidInput
from ..session import Session, is_hit, is_substring_hit, load_session, seed_path
from .dialogue import generate_dialogue
from .synthetic import generate_session

MODES = ("full", "prefix", "flat", "text", "hybrid", "none", "oracle")
RETRIEVING = ("prefix", "flat", "text", "hybrid")
REPORT_VERSION = 2  # 2: questions asked at a fixed time (ASK_AFTER_S after the last fact); batch_size
FIXED_EPOCH = 1_735_689_600.0  # 2025-01-01 UTC: write times for session files that give none
ASK_AFTER_S = 86_400.0  # questions are asked a day after the last fact


@dataclass(frozen=True)
class BenchConfig:
    session: str = "synthetic"  # "seed", "synthetic", "dialogue" or a JSONL path
    ns: tuple[int, ...] = (10, 20, 50, 100, 1000)
    modes: tuple[str, ...] = MODES
    backbone: str = "smollm2-135m-instruct"
    k: int = 3
    max_new_tokens: int = 30
    seed: int = 0
    queries: int = 20  # questions per synthetic session
    split: str = "heldout"
    batch_size: int = 8  # questions generated together
    retrieval_only: bool = False  # skip generation: recall, write and size metrics only
    store_config: dict | None = None  # a MemoryConfig as a dict for the stores the bench writes; None: defaults
    weights: str | None = None  # channel weights for prefix and hybrid: a file or "untrained"; None: the shipped one

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise InvalidInput(f"unknown modes {bad}; choose from {MODES}")
        if not self.ns or any(n < 1 for n in self.ns):
            raise InvalidInput("--n needs positive sizes")
        if self.k < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise InvalidInput("--k, --max-new-tokens and --batch-size must be positive")


def session_for(cfg: BenchConfig, n: int) -> Session:
    """The facts and questions of one sweep point.

    Raises:
        InvalidInput: N does not fit the session (the seed session has N = 10 or 20).
    """
    if cfg.session == "seed":
        s = load_session(seed_path())
        if n == 10:
            return Session([f for f in s.facts if not f.distractor], s.queries)
        if n == 20:
            return s
        raise InvalidInput("the seed session has N = 10 (facts about the user) or 20 (with distractors)")
    if cfg.session in ("synthetic", "dialogue"):
        make = generate_session if cfg.session == "synthetic" else generate_dialogue
        try:
            return make(n, seed=cfg.seed, split=cfg.split, n_queries=cfg.queries)
        except ValueError as e:
            raise InvalidInput(str(e)) from e
    s = load_session(cfg.session)
    if n > len(s.facts):
        raise InvalidInput(f"{cfg.session} has {len(s.facts)} facts; N = {n} is too many")
    kept = s.facts[:n]
    ids = {f.id for f in kept}
    return Session(kept, [q for q in s.queries if set(q.fact_ids) <= ids])


@dataclass
class ModeResult:
    n: int
    mode: str
    queries: int
    hit_rate: float | None
    substring_hit_rate: float | None
    recall_at_1: float | None
    recall_at_k: float | None
    mean_prompt_tokens: float | None
    retrieve_ms_p50: float | None
    retrieve_ms_p95: float | None
    generate_ms_p50: float | None
    generate_ms_p95: float | None
    truncated_share: float | None
    write_ms_per_memory: float
    bytes_per_memory: float
    peak_rss_mb: float
    answers: list[dict[str, Any]] = field(default_factory=list)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 2)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def run(cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the sweep; returns the JSON-ready report."""
    from tqdm import tqdm

    from ..memory import Memory

    sessions = {n: session_for(cfg, n) for n in cfg.ns}  # fail on a bad N before any work
    try:
        store_config = MemoryConfig.model_validate(cfg.store_config) if cfg.store_config is not None else None
    except ValueError as e:
        raise InvalidInput(f"store_config is not a valid MemoryConfig: {e}") from e
    modes = () if cfg.retrieval_only else cfg.modes
    total = sum(len(s.facts) + len(s.queries) * max(1, len(modes)) for s in sessions.values())
    bar = tqdm(total=total, disable=not progress, desc="session-viability", unit="step", file=sys.stderr)
    results: list[ModeResult] = []
    truncated_note = False
    channel = None
    for n, session in sessions.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            with Memory.open(path, backbone=cfg.backbone, config=store_config, weights=cfg.weights) as mem:
                channel = mem.weights
                t0 = time.perf_counter()
                ids: list[str] = []
                times = _fact_times(session)
                for i in range(0, len(session.facts), 256):
                    chunk = session.facts[i : i + 256]
                    ids += mem.write_many([{"text": f.text, "ts": t, "session": f.session, "role": f.role,
                                            "speaker": f.speaker}
                                           for f, t in zip(chunk, times[i : i + 256])])
                    bar.update(len(chunk))
                now = max(times) + ASK_AFTER_S
                write_ms = (time.perf_counter() - t0) * 1000 / max(1, len(ids))
                fact_of = dict(zip(ids, (f.id for f in session.facts)))
                memory_of = {v: k for k, v in fact_of.items()}
                ranks = {m: [_ranked(mem, q.text, cfg.k, m, fact_of, now) for q in session.queries]
                         for m in ("ams", "flat")}
                common = dict(n=n, queries=len(session.queries), write_ms_per_memory=round(write_ms, 2),
                              bytes_per_memory=0.0)  # set once the store is closed
                if cfg.retrieval_only:
                    for method in ("ams", "flat"):
                        r1, rk = _recall(ranks[method], session)
                        results.append(ModeResult(mode=f"retrieval:{method}", hit_rate=None, substring_hit_rate=None,
                                                  recall_at_1=r1, recall_at_k=rk, mean_prompt_tokens=None,
                                                  retrieve_ms_p50=None, retrieve_ms_p95=None, generate_ms_p50=None,
                                                  generate_ms_p95=None, truncated_share=None,
                                                  peak_rss_mb=_peak_rss_mb(), **common))
                for mode in modes:
                    res = _run_mode(mem, cfg, mode, session, fact_of, memory_of, ranks, bar, now)
                    truncated_note |= bool(res.pop("truncated_any"))
                    results.append(ModeResult(mode=mode, peak_rss_mb=_peak_rss_mb(), **common, **res))
            # closing checkpoints the WAL into the file: measure the store, not its journal
            for r in results:
                if r.n == n:
                    r.bytes_per_memory = round(_file_bytes(path) / max(1, len(ids)), 1)
    bar.close()
    return {
        "report_version": REPORT_VERSION,
        "benchmark": "session-viability",
        "config": {**asdict(cfg), "ns": list(cfg.ns), "modes": list(cfg.modes)},
        "channel_weights": channel,  # the file prefix and hybrid used (the shipped one by default); None: untrained
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpu_count": os.cpu_count(), "torch": _version("torch"),
                        "transformers": _version("transformers")},
        "hit_rule": "any keyword as a whole word, case-insensitive, accents folded, and no forbidden word",
        "notes": (["full mode left-truncated the history to the context budget for some N; see truncated_share"]
                  if truncated_note else []),
        "results": [asdict(r) for r in results],
    }


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:
        return None


def _fact_times(session: Session) -> list[float]:
    """Each fact's write time: its own, or (for sessions without times) one a minute from FIXED_EPOCH.
    With the question time fixed too, a rerun gives the same retrieval whatever the clock says."""
    return [f.ts if f.ts is not None else FIXED_EPOCH + 60.0 * i for i, f in enumerate(session.facts)]


def write_session(mem, session: Session) -> tuple[dict[str, str], float]:
    """Write a session's facts to `mem` in one transaction, each at its time (`_fact_times`) and in
    its conversation -> (fact id -> memory id, the time its questions are asked: `ASK_AFTER_S`
    after the last fact)."""
    times = _fact_times(session)
    ids = mem.write_many([{"text": f.text, "ts": t, "session": f.session} for f, t in zip(session.facts, times)])
    return {f.id: m for f, m in zip(session.facts, ids)}, max(times) + ASK_AFTER_S


def _ranked(mem, query: str, k: int, method: str, fact_of: dict[str, str], now: float) -> list[str]:
    return [fact_of[h.id] for h in mem.search(query, k=k, method=method, now=now)]


def _recall(ranked: list[list[str]], session: Session) -> tuple[float | None, float | None]:
    gold = [(set(q.fact_ids), r) for q, r in zip(session.queries, ranked) if q.fact_ids]
    if not gold:
        return None, None
    r1 = sum(bool(r[:1] and r[0] in g) for g, r in gold) / len(gold)
    rk = sum(bool(g & set(r)) for g, r in gold) / len(gold)
    return round(r1, 4), round(rk, 4)


def _run_mode(mem, cfg: BenchConfig, mode: str, session: Session, fact_of, memory_of, ranks, bar,
              now: float) -> dict:
    gens = []
    for i in range(0, len(session.queries), cfg.batch_size):  # one batch a call: the bar moves per batch
        chunk = session.queries[i : i + cfg.batch_size]
        gens += _answer(mem, cfg, mode, chunk, memory_of, now)
        bar.update(len(chunk))
    answers, hits, subs = [], 0, 0
    for q, g in zip(session.queries, gens):
        hit, sub = is_hit(g.text, q.keywords, q.forbidden), is_substring_hit(g.text, q.keywords)
        hits += hit
        subs += sub
        answers.append({"query": q.text, "answer": g.text, "hit": hit, "substring_hit": sub, "keywords": q.keywords,
                        "forbidden": q.forbidden, "gold": q.fact_ids,
                        "used": [fact_of.get(m, m) for m in g.memory_ids], "in_tokens": g.in_tokens,
                        "truncated": g.truncated})
    nq = max(1, len(session.queries))
    truncated = sum(g.truncated for g in gens)
    ret_ms, gen_ms, tokens = [g.retrieve_ms for g in gens], [g.generate_ms for g in gens], [g.in_tokens for g in gens]
    recall = _recall(ranks["flat" if mode == "flat" else "ams"], session) if mode in RETRIEVING else (None, None)
    return dict(
        hit_rate=round(hits / nq, 4), substring_hit_rate=round(subs / nq, 4), recall_at_1=recall[0],
        recall_at_k=recall[1], mean_prompt_tokens=round(statistics.mean(tokens), 1) if tokens else None,
        retrieve_ms_p50=_pct(ret_ms, 0.5), retrieve_ms_p95=_pct(ret_ms, 0.95), generate_ms_p50=_pct(gen_ms, 0.5),
        generate_ms_p95=_pct(gen_ms, 0.95), truncated_share=round(truncated / nq, 4) if mode == "full" else None,
        answers=answers, truncated_any=truncated > 0,
    )


def _answer(mem, cfg: BenchConfig, mode: str, queries: list, memory_of: dict[str, str], now: float) -> list:
    """The generations for a batch of questions; `oracle` gives each its gold memories as text."""
    common = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, now=now)
    if mode != "oracle":
        return mem.generate_many([q.text for q in queries], mode=mode, k=cfg.k, **common)
    gold = [[memory_of[f] for f in q.fact_ids if f in memory_of] for q in queries]
    with_gold = [i for i, g in enumerate(gold) if g]
    without = [i for i, g in enumerate(gold) if not g]  # nothing to give: the floor
    out = dict(zip(with_gold, mem.generate_many([queries[i].text for i in with_gold], mode="text",
                                                memory_ids=[gold[i] for i in with_gold], **common)))
    out.update(zip(without, mem.generate_many([queries[i].text for i in without], mode="none", **common)))
    return [out[i] for i in range(len(queries))]


def format_table(report: dict[str, Any]) -> str:
    """The report's results as a terminal table."""
    cols = [("N", "n", 6, "d"), ("mode", "mode", 16, "s"), ("hit", "hit_rate", 5, ".2f"),
            ("substr", "substring_hit_rate", 6, ".2f"), ("r@1", "recall_at_1", 5, ".2f"),
            ("r@k", "recall_at_k", 5, ".2f"), ("tokens", "mean_prompt_tokens", 6, ".0f"),
            ("ret p50", "retrieve_ms_p50", 7, ".1f"), ("ret p95", "retrieve_ms_p95", 7, ".1f"),
            ("gen p50", "generate_ms_p50", 7, ".0f"), ("gen p95", "generate_ms_p95", 7, ".0f"),
            ("write ms", "write_ms_per_memory", 8, ".1f"), ("B/mem", "bytes_per_memory", 7, ".0f"),
            ("RSS MB", "peak_rss_mb", 6, ".0f")]
    lines = [" ".join(h.rjust(w) for h, _, w, _ in cols)]
    for r in report["results"]:
        lines.append(" ".join("-".rjust(w) if r[key] is None else format(r[key], f">{w}{spec}")
                              for _, key, w, spec in cols))
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def plot(report: dict[str, Any], out: str | Path) -> None:
    """PNG of hit-rate and mean prompt tokens against N, one line per mode."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["hit_rate"] is not None]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in modes:
        pts = sorted((r["n"], r["hit_rate"], r["mean_prompt_tokens"]) for r in rows if r["mode"] == m)
        ns = [p[0] for p in pts]
        ax1.plot(ns, [p[1] for p in pts], marker="o", label=m)
        ax2.plot(ns, [p[2] for p in pts], marker="o", label=m)
    cfg = report["config"]
    for ax, title, ylabel in ((ax1, "hit-rate", "share of questions answered"),
                              (ax2, "prompt size", "mean prompt tokens (incl. prefix slots)")):
        ax.set_xscale("log")
        ax.set_xlabel("facts in the store (N)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.set_ylim(-0.02, 1.02)
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    for ax in (ax1, ax2):
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax1.legend(fontsize=8)
    fig.suptitle(f"session-viability: {cfg['session']} session, {cfg['backbone']}, k={cfg['k']}, "
                 f"{cfg['max_new_tokens']} new tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_json(report: dict[str, Any], out: str | Path) -> None:
    Path(out).write_text(json.dumps(report, indent=1, ensure_ascii=False))
