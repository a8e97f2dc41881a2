"""Write a few memories, close the store, reopen it, and ask about them.

    .venv/bin/python examples/quickstart.py
"""

import tempfile
from pathlib import Path

import ams

path = Path(tempfile.mkdtemp()) / "alice.db"
with ams.Memory.open(path, user_id="alice") as mem:
    mem.write("I adopted a beagle named Waffles.", session="monday")
    mem.write("My sister Ana lives in Porto and works as an architect.", session="monday")
    mem.write("I am allergic to peanuts.", session="tuesday")

with ams.Memory.open(path, user_id="alice") as mem:  # everything comes back from the file
    for hit in mem.search("What's my dog called?", k=2):
        print(f"{hit.score:.3f} {hit.text}  {hit.scores}")
    for mode in ("none", "text", "hybrid"):
        g = mem.generate("What's my dog called?", mode=mode, max_new_tokens=24)
        print(f"{mode:>6}: {g.text}  ({g.in_tokens} prompt tokens, memories {len(g.memory_ids)})")
