"""frozenbn: BatchNormalization that behaves the same in fit and evaluate."""

__version__ = "0.1.0"

from frozenbn import callbacks
from frozenbn._advice import Recommendation
from frozenbn._pairs import RewriteReport
from frozenbn.audit import AuditReport
from frozenbn.audit import LayerAudit
from frozenbn.audit import audit
from frozenbn.convert import convert
from frozenbn.convert import freeze
from frozenbn.convert import unfreeze
from frozenbn.fold import FoldReport
from frozenbn.fold import fold
from frozenbn.fuse import FuseReport
from frozenbn.fuse import FusedBatchNorm
from frozenbn.fuse import fuse
from frozenbn.fuse import unfuse
from frozenbn.layers import BatchNormalization
from frozenbn.layers import Frozen
from frozenbn.patch import patch
from frozenbn.recalibrate import recalibrate

__all__ = [
    "AuditReport",
    "BatchNormalization",
    "FoldReport",
    "Frozen",
    "FuseReport",
    "FusedBatchNorm",
    "LayerAudit",
    "Recommendation",
    "RewriteReport",
    "__version__",
    "audit",
    "callbacks",
    "convert",
    "fold",
    "freeze",
    "fuse",
    "patch",
    "recalibrate",
    "unfreeze",
    "unfuse",
]
