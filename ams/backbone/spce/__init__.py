"""The native SPCE backbone: a HuggingFace causal LM whose rotary phases come from absolute time.

Importing this package registers `model_type="spce"` with `AutoConfig` and `AutoModelForCausalLM`,
so `AutoModelForCausalLM.from_pretrained` loads saved SPCE models like any other.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_spce import SpceConfig
from .modeling_spce import SpceCache, SpceForCausalLM, SpceModel, SpcePreTrainedModel

AutoConfig.register("spce", SpceConfig, exist_ok=True)
AutoModelForCausalLM.register(SpceConfig, SpceForCausalLM, exist_ok=True)

__all__ = ["SpceCache", "SpceConfig", "SpceForCausalLM", "SpceModel", "SpcePreTrainedModel"]
