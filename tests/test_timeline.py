"""Memories' write times reaching an SPCE backbone's rotary phases: the prompt's timeline."""

import pytest
import torch

import ams
from ams.config import MemoryConfig
from ams.errors import InvalidInput
from ams.memory import _token_times

DAY = 86400.0
NOW = 1_767_225_600.0


def test_token_times_shift_each_block_and_never_decrease():
    # user text: 0..9 template, block A at 10..19, 20..24 between, block B at 25..39, question after
    starts = [-1, -1, 0, 5, 10, 14, 19, 20, 25, 30, 38, 40, 50, 60, 60]
    times = _token_times(starts, [(10, 20, -30.0), (25, 40, -5.0)])
    want_shift = [-30, -30, -30, -30, -30, -30, -30, -30, -5, -5, -5, 0, 0, 0, 0]
    assert times == [i + s for i, s in enumerate(want_shift)]
    assert all(b >= a for a, b in zip(times, times[1:]))
    assert _token_times([-1, 0, 3], []) == [0.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def spce_dir(tiny_backbone_dir):
    return f"spce:{tiny_backbone_dir}"


def _open(tmp_path, backbone, rate):
    return ams.Memory.open(tmp_path / f"t{rate}.db", backbone=backbone,
                           config=MemoryConfig(timeline_tokens_per_day=rate))


def test_backbone_times_follow_rotary_relativity(spce_dir, tiny_backbone_dir, tmp_path):
    with _open(tmp_path, spce_dir, 0.0) as mem:
        bb = mem.backbone
        ids = bb.chat_ids("Where does my sister live?")
        plain = bb.generate(ids, max_new_tokens=8)
        index = [float(i) for i in range(len(ids))]
        assert bb.generate(ids, max_new_tokens=8, times=index) == plain
        # a whole-prompt shift changes no relative time, so nothing changes (fp64 phases)
        assert bb.generate(ids, max_new_tokens=8, times=[t + 1e6 + 0.25 for t in index]) == plain
        with pytest.raises(InvalidInput):
            bb.generate(ids, times=index[::-1])
        with pytest.raises(InvalidInput):
            bb.generate(ids, times=index[:-1])
    with ams.Memory.open(tmp_path / "llama.db", backbone=tiny_backbone_dir) as mem:
        assert not mem.backbone.takes_times
        hi = mem.backbone.chat_ids("hi")
        with pytest.raises(InvalidInput, match="token times"):
            mem.backbone.generate(hi, times=[float(i) for i in range(len(hi))])


def test_memory_ages_reach_the_prompt_times(spce_dir, tmp_path):
    facts = [("My sister Ana lives in Porto.", NOW - 200 * DAY), ("I adopted a beagle named Waffles.", NOW - 2 * DAY)]
    with _open(tmp_path, spce_dir, 0.5) as mem:
        ids = [mem.write(t, ts=ts) for t, ts in facts]
        rows = [mem._row_of[i] for i in reversed(ids)]  # newest first, as a ranking might give them
        plan = mem._plan("What is my dog called?", "text", 2, 8, None, rows, NOW)
        text = mem.backbone.decode(plan.ids)
        assert text.index("Ana lives") < text.index("Waffles")  # oldest first on the timeline
        times, n = plan.times, len(plan.ids)
        assert len(times) == n and all(b >= a for a, b in zip(times, times[1:]))
        shift = [t - i for i, t in enumerate(times)]
        assert shift[-1] == 0.0  # the question is asked now
        assert min(shift) == pytest.approx(-100.0)  # 200 days at half a token a day
        assert -1.0 in [round(s, 6) for s in shift]  # the 2-day-old memory
        # the phases see it: the prompt's last logits move
        model = mem.backbone.model
        x = torch.tensor([plan.ids])
        with torch.no_grad():
            moved = model(x, position_ids=torch.tensor([times], dtype=torch.float64)).logits[0, -1]
            still = model(x).logits[0, -1]
        assert (moved - still).abs().max() > 1e-3
        assert mem.generate("What is my dog called?", mode="text", k=2, max_new_tokens=8, now=NOW).text is not None


def test_a_timeline_of_fresh_memories_is_the_plain_prompt(spce_dir, tmp_path):
    answers = {}
    for rate in (0.0, 3.0):
        with _open(tmp_path, spce_dir, rate) as mem:
            mem.write_many([{"text": "My sister Ana lives in Porto.", "ts": NOW},
                            {"text": "I adopted a beagle named Waffles.", "ts": NOW}])
            answers[rate] = [g.text for g in mem.generate_many(["Where does Ana live?", "What is my dog called?"],
                                                                mode="text", k=2, max_new_tokens=8, now=NOW)]
            for mode in ("full", "hybrid"):
                answers[rate].append(mem.generate("Where does Ana live?", mode=mode, max_new_tokens=8, now=NOW).text)
    assert answers[3.0] == answers[0.0]
