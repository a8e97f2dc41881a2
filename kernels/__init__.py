"""Triton kernels for the hot encode paths, each with its PyTorch reference beside it.

Installed as `ams.kernels`. Knows Triton and PyTorch only: the parts of `ams` call it, it calls
nothing of `ams`. Every public function runs its kernel on CUDA tensors when Triton is installed
and its `*_ref` reference otherwise; tests run the kernels on CPU with `TRITON_INTERPRET=1`.
"""

from .kakeya_encode import HAS_TRITON, kakeya_encode, kakeya_encode_ref
from .spce_rotary import spce_rotary, spce_rotary_ref

__all__ = ["HAS_TRITON", "kakeya_encode", "kakeya_encode_ref", "spce_rotary", "spce_rotary_ref"]
