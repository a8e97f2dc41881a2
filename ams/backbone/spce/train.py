"""Training SPCE language models with `accelerate`: from scratch, or adapting a converted model.

The same loop runs on CPU, one GPU, or several under `accelerate launch`: random crops of a token
stream (seeded by step, so a resumed run draws the batches it would have drawn), AdamW with warm-up
and cosine decay, periodic validation on fixed crops of a held-out stream, a progress bar, and
checkpoints of weights and optimizer state as safetensors (nothing is pickled).

    history = train_lm(model, train_tokens, val_tokens, LMTrainConfig(steps=300), out_dir="runs/w32-carry")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ...checkpoints import load_checkpoint, lr_at, save_checkpoint


@dataclass
class LMTrainConfig:
    """Args:
        steps: optimizer steps.
        batch_size: sequences per step (per process).
        seq_len: tokens per sequence.
        lr: peak learning rate; warm-up over `warmup` steps, cosine decay to `lr * min_lr_ratio`.
        weight_decay: AdamW decay on matrices (not on norms, gates or frequencies).
        grad_clip: gradient norm clip.
        eval_every: steps between validations (and at the end).
        eval_batches: validation batches of `batch_size` fixed crops each.
        checkpoint_every: steps between checkpoints (and at the end), when an out_dir is given.
        seed: seeds the initial state and every batch.
    """

    steps: int = 300
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    checkpoint_every: int = 100
    seed: int = 0


def token_stream(texts: Iterable[str], encode: Callable[[str], list[int]], *, sep: int) -> Tensor:
    """One long (N,) stream of token ids, documents separated by `sep`."""
    ids: list[int] = []
    for t in texts:
        ids.extend(encode(t))
        ids.append(sep)
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(tokens: Tensor, batch_size: int, seq_len: int, *, seed: int, step: int) -> Tensor:
    """(B, T) random crops, the same for the same (seed, step)."""
    if tokens.numel() <= seq_len:
        raise ValueError(f"a stream of {tokens.numel()} tokens cannot give crops of {seq_len}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=g)
    return torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])


def validation_batches(tokens: Tensor, batch_size: int, seq_len: int, n: int) -> list[Tensor]:
    """`n` batches of evenly spaced crops of the held-out stream (the same every time)."""
    count = batch_size * n
    starts = torch.linspace(0, tokens.numel() - seq_len - 1, count).long().tolist()
    crops = torch.stack([tokens[s : s + seq_len] for s in starts])
    return list(crops.split(batch_size))


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Tensor], *, skip: int = 0) -> float | tuple[float, float]:
    """Mean next-token loss (nats) over the batches; with `skip`, also over predictions of tokens from `skip` on."""
    was_training = model.training
    model.eval()
    total = total_late = 0.0
    count = count_late = 0
    device = next(model.parameters()).device
    for x in batches:
        x = x.to(device)
        logits = model(x).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(x.shape[0], -1)
        total, count = total + nll.sum().item(), count + nll.numel()
        late = nll[:, max(0, skip - 1):]  # column j predicts token j + 1
        total_late, count_late = total_late + late.sum().item(), count_late + late.numel()
    model.train(was_training)
    mean = total / max(count, 1)
    return (mean, total_late / max(count_late, 1)) if skip else mean


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "rotary" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_lm(model: nn.Module, train_tokens: Tensor, val_tokens: Tensor, cfg: LMTrainConfig, *,
             out_dir: str | Path | None = None, progress: bool = True, val_skip: int = 0,
             stop_at: int | None = None) -> dict:
    """Train a causal LM on crops of `train_tokens`, validating on `val_tokens`.

    Args:
        model: a causal LM returning `.loss` for `labels` (its frozen parameters stay frozen).
        train_tokens, val_tokens: (N,) token streams.
        cfg: the recipe.
        out_dir: where checkpoints go; a run with a checkpoint there resumes from it.
        progress: show a progress bar.
        val_skip: also report validation loss on tokens from this position on (0: not).
        stop_at: stop after this step, checkpointing it (the schedule still spans `cfg.steps`);
            a later call with the same out_dir resumes.

    Returns:
        {"step": [...], "train_loss": [...], "val": [[step, loss, loss_from_skip], ...], "config": {...}}.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    history: dict = {"step": [], "train_loss": [], "val": [], "config": asdict(cfg)}
    start = 0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / "checkpoint" / "state.json").is_file():
        start, history = load_checkpoint(out, model, optimizer)
    model, optimizer = acc.prepare(model, optimizer)
    val = validation_batches(val_tokens, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
    rank_seed = cfg.seed + 7919 * acc.process_index
    model.train()
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress or not acc.is_main_process,
               desc="train", unit="step")
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        x = sample_batch(train_tokens, cfg.batch_size, cfg.seq_len, seed=rank_seed, step=step).to(acc.device)
        loss = model(x, labels=x).loss
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history["step"].append(step + 1)
        history["train_loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            scores = evaluate(acc.unwrap_model(model), val, skip=val_skip)
            row = [done, *scores] if val_skip else [done, scores]
            history["val"].append(row)
            bar.write(f"step {done}: val loss {row[1]:.4f}" + (f", from token {val_skip}: {row[2]:.4f}" if val_skip else ""))
        if out is not None and acc.is_main_process and (done % cfg.checkpoint_every == 0 or done == end):
            save_checkpoint(out, acc.unwrap_model(model), optimizer, done, history)
    return history


def plot_curves(histories: dict[str, dict], path: str | Path, *, title: str = "") -> None:
    """Training (smoothed) and validation loss of several runs, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"
        loss = torch.tensor(h["train_loss"])
        k = max(1, len(loss) // 30)
        smooth = loss.unfold(0, k, 1).mean(1) if len(loss) >= k else loss
        ax.plot(h["step"][k - 1:], smooth.tolist(), color=color, alpha=0.45, lw=1)
        if h["val"]:
            v = list(zip(*h["val"]))
            ax.plot(v[0], v[1], "o-", color=color, lw=2, label=f"{name} (val {v[1][-1]:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "training (thin) and validation (dots) loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
