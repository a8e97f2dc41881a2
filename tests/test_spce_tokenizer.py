"""The tiktoken encoding built from the shipped GGUF vocabulary tokenizes as the HF tokenizer does."""

import inspect

import pytest

from ams.backbone.spce.tokenization_spce import shipped_tokenizer


@pytest.fixture(scope="module")
def pair(tiny_backbone_dir):
    from transformers import AutoTokenizer

    return shipped_tokenizer(), AutoTokenizer.from_pretrained(tiny_backbone_dir)  # SmolLM2's HF tokenizer


def sample_texts() -> list[str]:
    import ams.memory
    from ams.bench.dialogue import generate_dialogue

    dialogue = generate_dialogue(200, seed=3, split="heldout")
    return [
        inspect.getsource(ams.memory),  # code: indentation runs, operators, docstrings
        "\n".join(f"{f.speaker}: {f.text}" for f in dialogue.facts),  # chat
        "Größe café naïve — 東京 🐶 2026-11-23 12,345.67 ½ x\x04y \t\n\n  end",  # accents, CJK, emoji, digits
        " leading  spaces\r\nand tabs\t\t and trailing   ",
        "I've we'll they'd it's 'quoted' don't",
        "",
    ]


def test_ids_equal_the_hf_tokenizer(pair):
    tk, hf = pair
    for text in sample_texts():
        ids = tk.encode(text)
        assert ids == hf(text, add_special_tokens=False)["input_ids"], text[:60]
        assert tk.decode(ids) == hf.decode(ids)


def test_special_tokens_only_when_allowed(pair):
    tk, hf = pair
    text = "<|im_start|>user\nhi<|im_end|>"
    assert tk.encode(text, allow_special=True) == hf(text, add_special_tokens=False)["input_ids"]
    plain = tk.encode(text)  # user text cannot forge control tokens by default
    assert hf.convert_tokens_to_ids("<|im_start|>") not in plain and tk.decode(plain) == text


def test_decode_rejects_unknown_ids(pair):
    tk, _ = pair
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tk.decode([tk.vocab_size])
