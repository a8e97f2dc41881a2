"""A tiny randomly-initialised backbone: SmolLM2's tokenizer and chat template on a 2-layer, 64-wide
Llama. For unit tests (fast, and real HF code paths) and for benchmarks that time what the backbone
does not decide (reopening a large store reads nothing the backbone made but its codec frames)."""

from __future__ import annotations

from pathlib import Path


def tiny_llama(where: str | Path, *, seed: int = 0) -> str:
    """Write the tiny backbone to directory `where` unless it is there already; returns its path."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ..backbone.registry import _cached_gguf, shipped_gguf_path

    where = Path(where)
    if not (where / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(_cached_gguf(shipped_gguf_path("smollm2-135m-instruct"),
                                                         key="smollm2-135m-instruct"))
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
        LlamaForCausalLM(cfg).save_pretrained(where)
        tok.save_pretrained(where)
    return str(where)
