"""Does the carry earn its place? Small SPCE models trained from scratch on sequences of 8 windows.

Three models, identical but for attention: full attention over the sequence, a window of w without
carry, and a window of w with the carry. Each trains with the same recipe, seed and batches, on
text tokenized with the tiktoken encoding of SmolLM2's vocabulary, and is validated on held-out
text. Reported: held-out loss over all tokens, and over the tokens at position >= w, which a window
alone cannot connect to the start of the sequence.

Corpora (both available offline):
- `python` (default): the Python standard library's own source files, split by file (one file in
  ten held out). Code is full of long-range structure: names defined at the top of a file recur
  hundreds of tokens later.
- `dialogue`: multi-session chat transcripts from the dialogue generator, `train` split for
  training and `heldout` split (other names, values and templates) for validation.

    python benchmarks/spce_window.py --window 32 --steps 300 --out benchmarks/results/spce_window
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from ams.backbone.spce import SpceConfig, SpceForCausalLM
from ams.backbone.spce.tokenization_spce import shipped_tokenizer
from ams.backbone.spce.train import LMTrainConfig, plot_curves, token_stream, train_lm
from ams.bench.dialogue import generate_dialogue


def transcripts(n_turns: int, *, seed: int, split: str) -> list[str]:
    """One text per conversation: a date line, then "Speaker: text" lines (groups of up to 5,000 turns)."""
    convs: dict[str, list] = defaultdict(list)
    for i, start in enumerate(range(0, n_turns, 5000)):
        session = generate_dialogue(min(5000, n_turns - start), seed=seed * 1000 + i, split=split, n_queries=1)
        for f in session.facts:
            convs[f"{i}-{f.session}"].append(f)
    out = []
    for turns in convs.values():
        day = time.strftime("%Y-%m-%d", time.gmtime(turns[0].ts)) if turns[0].ts else ""
        out.append(f"[{day}]\n" + "\n".join(f"{t.speaker}: {t.text}" for t in turns))
    return out


def python_sources(max_chars: int) -> tuple[list[str], list[str]]:
    """(train, held-out) texts of the standard library's .py files, split one in ten by a hash of the path."""
    import sysconfig
    import zlib

    root = Path(sysconfig.get_paths()["stdlib"])
    train, held = [], []
    size = 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2] or path.name.startswith("test"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        (held if zlib.crc32(str(path.relative_to(root)).encode()) % 10 == 0 else train).append(text)
        size += len(text)
        if size >= max_chars:
            break
    return train, held


def small_model(vocab: int, *, window: int, carry: int, seed: int, width: int, layers: int) -> SpceForCausalLM:
    """A fresh model; every variant starts from the same weights (the carry's own are extra, gate at zero)."""
    def build(carry_size: int) -> SpceForCausalLM:
        torch.manual_seed(seed)
        return SpceForCausalLM(SpceConfig(
            vocab_size=vocab, hidden_size=width, intermediate_size=3 * width, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, sliding_window=window,
            carry_size=carry_size, tie_word_embeddings=True))

    model = build(carry)
    if carry:  # the carry's parameters are drawn between layers: take the shared ones from the plain model
        missing, unexpected = model.load_state_dict(build(0).state_dict(), strict=False)
        assert not unexpected and all(".carry." in k for k in missing), (missing, unexpected)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--carry", type=int, default=64)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--corpus", choices=["python", "dialogue"], default="python")
    ap.add_argument("--max-chars", type=int, default=12_000_000, help="python corpus: characters read")
    ap.add_argument("--train-turns", type=int, default=20000, help="dialogue corpus: training turns")
    ap.add_argument("--val-turns", type=int, default=3000, help="dialogue corpus: held-out turns")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="run only these variants")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/spce_window"))
    args = ap.parse_args()

    tok = shipped_tokenizer()
    sep = tok.special_tokens["<|endoftext|>"]
    if args.corpus == "python":
        train_texts, val_texts = python_sources(args.max_chars)
    else:
        train_texts = transcripts(args.train_turns, seed=args.seed, split="train")
        val_texts = transcripts(args.val_turns, seed=args.seed + 1, split="heldout")
    train, val = token_stream(train_texts, tok.encode, sep=sep), token_stream(val_texts, tok.encode, sep=sep)
    w, T = args.window, 8 * args.window
    print(f"train {train.numel()} tokens, held-out {val.numel()} tokens, sequences of {T} = 8 windows of {w}")
    variants = {"full attention": (T, 0), f"window {w}": (w, 0), f"window {w} + carry": (w, args.carry)}
    cfg = LMTrainConfig(steps=args.steps, batch_size=args.batch, seq_len=T, lr=args.lr, seed=args.seed,
                        eval_every=max(1, args.steps // 8), eval_batches=16, checkpoint_every=args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, (window, carry) in variants.items():
        if args.only and name not in args.only:
            continue
        model = small_model(tok.vocab_size, window=window, carry=carry, seed=args.seed, width=args.width,
                            layers=args.layers)
        t0 = time.perf_counter()
        hist = train_lm(model, train, val, cfg, out_dir=args.out / name.replace(" ", "_").replace("+", "plus"),
                        val_skip=w)
        last = hist["val"][-1]
        results[name] = {"window": window, "carry": carry, "val_loss": last[1], f"val_loss_from_{w}": last[2],
                         "params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - t0,
                         "history": hist}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{name}: held-out loss {last[1]:.4f}, from token {w}: {last[2]:.4f}")
    plot_curves({k: v["history"] for k, v in results.items()}, args.out / "loss.png",
                title=f"SPCE from scratch on {args.corpus}, sequences of {T} tokens, window {w}")
    print(f"\n| model | held-out loss | loss on tokens >= {w} | parameters | train seconds |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['val_loss']:.4f} | {r[f'val_loss_from_{w}']:.4f} | {r['params']:,} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
