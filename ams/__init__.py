"""AMS: long-term memory for chatbots that run their own language model.

    import ams
    with ams.Memory.open("alice.db") as mem:
        mem.write("I adopted a beagle named Waffles.")
        print(mem.generate("What's my dog called?", mode="hybrid").text)
"""

from ._version import __version__
from .config import KakeyaConfig, MemoryConfig, PrefixConfig, RetrievalConfig, TemporalConfig
from .errors import (
                     AmsError,
                     BackboneNotFound,
                     EmptyText,
                     InvalidInput,
                     MemoryNotFound,
                     NotTrained,
                     SchemaTooNew,
                     StoreBusy,
                     StoreClosed,
                     StoreCorrupted,
                     StoreMismatch,
                     TextTooLong,
                     UnknownMode,
)
from .memory import Memory
from .types import MODES, Generation, Hit, MemoryRecord

__all__ = [
    "MODES", "AmsError", "BackboneNotFound", "EmptyText", "Generation", "Hit", "InvalidInput",
    "KakeyaConfig", "Memory", "MemoryConfig", "MemoryNotFound", "MemoryRecord", "NotTrained",
    "PrefixConfig", "RetrievalConfig", "SchemaTooNew", "StoreBusy", "StoreClosed", "StoreCorrupted",
    "StoreMismatch", "TemporalConfig", "TextTooLong", "UnknownMode", "__version__",
]
