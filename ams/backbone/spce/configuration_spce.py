"""Configuration of the SPCE causal LM (see modeling_spce.py for the model it describes)."""

from __future__ import annotations

import math

from transformers import PretrainedConfig


class SpceConfig(PretrainedConfig):
    """A Llama-shaped decoder whose rotary phases come from absolute time, with windowed attention
    and a carry across windows.

    Args:
        vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
        num_key_value_heads, head_dim, hidden_act, rms_norm_eps, attention_bias, mlp_bias,
        initializer_range, max_position_embeddings: as in `LlamaConfig`.
        rope_theta: the base of the frequency palette's initial log-spaced atoms:
            omega_a = rope_theta ** (-a / n_atoms), which are RoPE's frequencies when n_atoms = head_dim / 2.
        n_atoms: atoms in the shared palette (default head_dim / 2).
        selection_sharpness: the logit margin of each pair's initial one-hot atom choice; at the
            default 1e4 the softmax is exactly one-hot in fp32, so the initial model is RoPE exactly.
        n_streams: time streams (e.g. 0 = tokens, 1 = memories' timestamps); each has its own
            learnable phase offsets.
        stream_time_steps: per stream, its smallest time step (1 for token indices); a stream's
            frequencies are capped below pi per step, so adjacent steps never alias.
        spatial_dims: dimensions of an optional position r; 0 (text) leaves out the k . r term.
        sliding_window: w, how many tokens (itself included) each token attends to.
        carry_size: complex channels of the carry across windows; 0 turns the carry off.
        carry_decay_windows: (shortest, longest) initial carry memory, in windows of token time.
        keyframe_every: K, windows between keyframes of a stream's state.
        max_keyframes: how many keyframes a stream keeps (the oldest go first).
        pad_token_id, bos_token_id, eos_token_id: special token ids (SmolLM2's by default).

    Raises:
        ValueError: an inconsistent shape or an out-of-range value.
    """

    model_type = "spce"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 49152,
        hidden_size: int = 576,
        intermediate_size: int = 1536,
        num_hidden_layers: int = 30,
        num_attention_heads: int = 9,
        num_key_value_heads: int | None = 3,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-5,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 8192,
        rope_theta: float = 100000.0,
        n_atoms: int | None = None,
        selection_sharpness: float = 1e4,
        n_streams: int = 1,
        stream_time_steps: list[float] | None = None,
        spatial_dims: int = 0,
        sliding_window: int = 512,
        carry_size: int = 64,
        carry_decay_windows: tuple[float, float] = (1.0, 64.0),
        keyframe_every: int = 8,
        max_keyframes: int = 4,
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        **kwargs,
    ):
        num_key_value_heads = num_key_value_heads or num_attention_heads
        head_dim = head_dim or hidden_size // num_attention_heads
        stream_time_steps = [1.0] * n_streams if stream_time_steps is None else [float(s) for s in stream_time_steps]
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary pairs, got {head_dim}")
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f"num_attention_heads ({num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({num_key_value_heads})")
        if n_streams < 1 or len(stream_time_steps) != n_streams or min(stream_time_steps) <= 0:
            raise ValueError(f"stream_time_steps needs {n_streams} positive steps, got {stream_time_steps}")
        if sliding_window < 1 or keyframe_every < 1 or max_keyframes < 0 or carry_size < 0 or spatial_dims < 0:
            raise ValueError("sliding_window and keyframe_every must be >= 1; max_keyframes, carry_size and "
                             "spatial_dims >= 0")
        lo, hi = carry_decay_windows
        if not 0 < lo <= hi:
            raise ValueError(f"carry_decay_windows must be 0 < shortest <= longest, got {carry_decay_windows}")
        if rope_theta <= 1 or not math.isfinite(rope_theta):
            raise ValueError(f"rope_theta must be a finite number above 1, got {rope_theta}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.rms_norm_eps = rms_norm_eps
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = float(rope_theta)
        self.n_atoms = n_atoms or head_dim // 2
        self.selection_sharpness = float(selection_sharpness)
        self.n_streams = n_streams
        self.stream_time_steps = stream_time_steps
        self.spatial_dims = spatial_dims
        self.sliding_window = sliding_window
        self.carry_size = carry_size
        self.carry_decay_windows = [float(lo), float(hi)]
        self.keyframe_every = keyframe_every
        self.max_keyframes = max_keyframes
        self.pad_token_id, self.bos_token_id, self.eos_token_id = pad_token_id, bos_token_id, eos_token_id
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id,
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
