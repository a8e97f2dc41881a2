"""Shared fixtures: a tiny randomly-initialised Llama backbone (fast unit tests) and fresh stores."""

from __future__ import annotations

import os
from pathlib import Path

# Triton kernels run in the interpreter on CPU; set TRITON_INTERPRET=0 on a GPU to run them compiled.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> str:
    """A 2-layer, 64-wide Llama with SmolLM2's tokenizer and chat template, random weights (seed 0)."""
    from ams.bench.tiny import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def other_backbone_dir(tmp_path_factory, tiny_backbone_dir) -> str:
    """Same architecture as the tiny backbone, different random weights: a different identity."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_backbone_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("tiny-llama-other")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_backbone_dir).save_pretrained(out)
    return str(out)


@pytest.fixture
def store_path(tmp_path) -> Path:
    """Path of a fresh store file."""
    return tmp_path / "memory.db"


@pytest.fixture
def fresh_store(store_path, tiny_backbone_dir):
    """An open Memory on a new file with the tiny backbone."""
    import ams

    mem = ams.Memory.open(store_path, backbone=tiny_backbone_dir)
    yield mem
    mem.close()


FACTS = [
    "I adopted a beagle named Waffles last spring.",
    "My brother Tomas lives in Lisbon and teaches chemistry.",
    "I drive a red Subaru Outback to work every day.",
    "My favourite food is mushroom risotto.",
    "I play the cello in a community orchestra on Thursdays.",
    "Octopuses have three hearts and blue blood.",
]


@pytest.fixture
def measured(request):
    """Keep a count a test measured with its report: the run's summary lists them, pass or fail, so a
    passing test still shows how far above its bound it stood."""

    def record(what: str, value) -> None:
        request.node.user_properties.append(("measured", f"{what}: {value}"))

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    lines = [f"{r.nodeid.split('::')[-1]}: {value}"
             for kind in ("passed", "failed") for r in terminalreporter.stats.get(kind, [])
             if getattr(r, "when", "call") == "call" for key, value in getattr(r, "user_properties", ()) if key == "measured"]
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
