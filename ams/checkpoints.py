"""What every training loop here shares: resumable checkpoints (weights and optimizer tensors as
safetensors, the rest as JSON), reproducible safetensors files, and the learning-rate schedule.

Nothing is pickled. A checkpoint directory is written beside the final one and renamed over it, so
a run killed while saving keeps its previous checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from torch import nn


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` and `metadata` to a safetensors file atomically, the same bytes for the same
    contents: the header's keys are sorted. safetensors writes the metadata in hash order, which
    changes from one process to the next, so a run that remade a file exactly would not remake its
    sha256."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensors stay 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + n :])
    tmp.replace(path)


def save_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, history: dict) -> None:
    """Weights, optimizer tensors (safetensors) and the step and history (JSON), written atomically."""
    from safetensors.torch import save_file, save_model

    tmp = out_dir / "checkpoint.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_model(model, str(tmp / "model.safetensors"))
    state = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in state["state"].items() for k, v in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": history,
                                                "param_groups": state["param_groups"]}))
    final = out_dir / "checkpoint"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def load_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore a checkpoint written by `save_checkpoint`; returns (step, history)."""
    from safetensors.torch import load_file, load_model

    ck = out_dir / "checkpoint"
    load_model(model, str(ck / "model.safetensors"))
    meta = json.loads((ck / "state.json").read_text())
    tensors = load_file(str(ck / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["history"]


def lr_at(step: int, cfg) -> float:
    """Linear warm-up over `cfg.warmup` steps, then cosine decay from `cfg.lr` to `cfg.lr * cfg.min_lr_ratio`
    at `cfg.steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
