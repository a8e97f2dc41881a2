"""Compare user-turn frames that put memories in front of a question (text and hybrid modes).

    .venv/bin/python benchmarks/prompt_frames.py                                # the dev session
    .venv/bin/python benchmarks/prompt_frames.py ams/data/seed_session.jsonl    # do not choose on this one

Each frame is a function (question, memory texts) -> user turn; "J" is the one `ams` ships
(`ams.memory._with_facts`). Frames are swapped in for one run each; retrieval is unchanged.
"""

from __future__ import annotations

import argparse

import ams
import ams.memory
from ams.session import is_hit, load_session


def _facts(texts: list[str]) -> str:
    return "\n".join(f"- {t}" for t in texts)


FRAMES = {
    "A": lambda q, t: f"Things I told you before:\n{_facts(t)}\n\nUsing them, answer my question briefly: {q}",
    "C": lambda q, t: f"Here is some information about me:\n{_facts(t)}\n\nQuestion: {q}\nAnswer in a few words.",
    "F": lambda q, t: f"{_facts(t)}\n\n{q}",
    "I": lambda q, t: f"Earlier I told you:\n{_facts(t)}\n\n{q} Answer in one short sentence.",
    "J": ams.memory._with_facts,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("session", nargs="?", default="benchmarks/dev_session.jsonl")
    args = p.parse_args()
    s = load_session(args.session)
    shipped = ams.memory._with_facts
    with ams.Memory.open(":memory:") as mem:
        mem.write_many([f.text for f in s.facts])
        print(f"{args.session}: {len(s.queries)} questions, k=3, 30 new tokens")
        for name, frame in FRAMES.items():
            ams.memory._with_facts = frame
            try:
                hits = {m: sum(is_hit(mem.generate(q.text, mode=m, max_new_tokens=30).text, q.keywords, q.forbidden)
                               for q in s.queries) for m in ("text", "hybrid")}
            finally:
                ams.memory._with_facts = shipped
            print(f"  frame {name}: text {hits['text']}/{len(s.queries)}  hybrid {hits['hybrid']}/{len(s.queries)}",
                  flush=True)


if __name__ == "__main__":
    main()
