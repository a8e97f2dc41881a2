"""Channel weights answering `ams train`'s validation questions as a store answers them.

    .venv/bin/python benchmarks/store_check.py shipped=ams/data/channel-smollm2-135m-instruct.safetensors \
        --json benchmarks/results/store_check_shipped.json

What `ams train` runs once trained (`ams.train.store_validation`), for weights already trained:
each validation user (held-out split, session seeds from 10,000) gets a fresh store opened with the
weights and the default settings, and the first `--answers` questions are asked in `text`,
`prefix` and `hybrid` through `Memory.generate_many`. Channels after the first are compared with it
question by question.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ams.train import ChannelTrainConfig, store_validation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("channels", nargs="+", help="name=path of channel weights")
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--answers", type=int, default=ChannelTrainConfig.eval_answers,
                   help="questions, the first validation users' first (default: as ams train)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cfg = ChannelTrainConfig(backbone=args.backbone, eval_answers=args.answers)
    paths = dict(c.split("=", 1) for c in args.channels)
    runs = {name: store_validation(path, cfg) for name, path in paths.items()}
    first = next(iter(runs))
    for name, r in runs.items():
        line = (f"{name:>12}: text {r['text_hit']:.3f}  prefix {r['prefix_hit']:.3f}  hybrid {r['hybrid_hit']:.3f}"
                f"  ({r['questions']} questions)")
        if name != first:
            for mode in ("prefix", "hybrid"):
                a = [x["hit"] for x in runs[first]["answers"] if x["mode"] == mode]
                b = [x["hit"] for x in r["answers"] if x["mode"] == mode]
                line += (f"; {mode} right only here {sum(y and not x for x, y in zip(a, b))}, "
                         f"only with {first} {sum(x and not y for x, y in zip(a, b))}")
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"answers": args.answers, "channels": {
            name: {"weights": paths[name], **r} for name, r in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
