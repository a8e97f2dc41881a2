"""Compression of the large per-memory fields: Kakeya and PQ codecs, clustering, and the set registry."""

from .codec import KakeyaCodec
from .kmeans import SphericalKMeans, normalize_rows
from .pq import PQCodec, ProductQuantizer
from .registry import CODEC_KINDS, CodecSet, KakeyaRegistry, SetSpec, canonical_axis, default_sets, load_codec

__all__ = ["CODEC_KINDS", "CodecSet", "KakeyaCodec", "KakeyaRegistry", "PQCodec", "ProductQuantizer", "SetSpec",
           "SphericalKMeans", "canonical_axis", "default_sets", "load_codec", "normalize_rows"]
