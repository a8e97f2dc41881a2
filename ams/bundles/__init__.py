"""The three fiber bundles: temporal (when), topic (what), context (in which conversation).

Each takes tensors in and gives a `BundleTriple` (base, fiber, dirn) out; none knows the backbone,
the store or the facade.
"""

from .base import BundleTriple
from .context import ContextBundle, context_point
from .temporal import TemporalBundle, phases_from_time
from .topic import TopicBundle

BUNDLES = ("temporal", "topic", "context")

__all__ = ["BUNDLES", "BundleTriple", "ContextBundle", "TemporalBundle", "TopicBundle",
           "context_point", "phases_from_time"]
