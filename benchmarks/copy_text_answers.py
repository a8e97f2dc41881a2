"""Copy text mode's answers to the training questions from one run's examples into another's.

    .venv/bin/python benchmarks/copy_text_answers.py runs/channel/examples-train.safetensors \
        runs/channel_salient12/examples-train.safetensors

The answers `prefix` steps train toward (`--prefix-target text`) are text mode's greedy answers to
each question's `hybrid` prompt, which salient-word settings do not change. A run whose examples
were built with other salient settings from the same users can take them from an earlier run
instead of generating them again (8 minutes for 1,200 questions on 2 CPU cores). Refused unless
both files hold the same questions, `hybrid` prompts and answer entities, in the same order.
"""

from __future__ import annotations

import argparse

from ams.train import examples_settings, load_examples, save_examples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="examples file whose text answers are taken")
    p.add_argument("target", help="examples file that receives them (rewritten, its settings kept)")
    args = p.parse_args()
    source, target = load_examples(args.source), load_examples(args.target)
    same = len(source) == len(target) and all(
        a.query == b.query and a.prompts["hybrid"] == b.prompts["hybrid"] and a.answer == b.answer
        for a, b in zip(source, target))
    if not same or any(a.text_answer is None for a in source):
        raise SystemExit("the files do not hold the same questions and prompts, or the source has no text answers")
    for a, b in zip(source, target):
        b.text_answer = a.text_answer
    save_examples(target, args.target, examples_settings(args.target))
    print(f"{args.target}: {sum(bool(b.text_answer) for b in target)} of {len(target)} questions "
          "with a right text answer")


if __name__ == "__main__":
    main()
