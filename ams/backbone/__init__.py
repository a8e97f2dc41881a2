"""Backbones: the chatbot's own language model, behind one small interface."""

from .hf import BackboneEncoding, HFBackbone
from .registry import DEFAULT_BACKBONE, cache_dir, load_backbone

__all__ = ["BackboneEncoding", "HFBackbone", "DEFAULT_BACKBONE", "cache_dir", "load_backbone"]
