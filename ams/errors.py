"""Typed errors raised by the library. Every public failure is one of these."""

from __future__ import annotations


class AmsError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidInput(AmsError, ValueError):
    """An argument was rejected before anything was written."""


class EmptyText(InvalidInput):
    """A memory's text was empty or only whitespace."""


class TextTooLong(InvalidInput):
    """A memory's text does not fit in the backbone's context window."""


class UnknownMode(InvalidInput):
    """The generation mode is not one of the supported modes."""


class MemoryNotFound(AmsError, KeyError):
    """No memory with this id exists for this user."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better
        return str(self.args[0]) if self.args else "memory not found"


class StoreCorrupted(AmsError):
    """The file is not an AMS store, or its contents fail an integrity check."""


class StoreMismatch(AmsError):
    """The store was written with a different backbone or embedder."""


class StoreClosed(AmsError):
    """The memory was used after close()."""


class SchemaTooNew(AmsError):
    """The store was written by a newer version of the library."""


class NotTrained(AmsError):
    """A codec or index was used before train()."""


class BackboneNotFound(AmsError):
    """The backbone name or path could not be resolved to a model."""


class StoreBusy(AmsError):
    """Another writer held the store's lock for longer than the busy timeout."""
