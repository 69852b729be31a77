"""frozenbn: BatchNormalization that behaves the same in fit and evaluate."""

__version__ = "0.1.0"

from frozenbn.convert import convert
from frozenbn.convert import freeze
from frozenbn.convert import unfreeze
from frozenbn.layers import BatchNormalization
from frozenbn.layers import Frozen

__all__ = [
    "BatchNormalization",
    "Frozen",
    "__version__",
    "convert",
    "freeze",
    "unfreeze",
]
