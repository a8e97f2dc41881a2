"""Kakeya compression of the large per-memory fields: codecs, clustering, and the set registry."""

from .codec import KakeyaCodec
from .kmeans import SphericalKMeans, normalize_rows
from .registry import CodecSet, KakeyaRegistry, SetSpec, canonical_axis, default_sets

__all__ = ["CodecSet", "KakeyaCodec", "KakeyaRegistry", "SetSpec", "SphericalKMeans",
           "canonical_axis", "default_sets", "normalize_rows"]
