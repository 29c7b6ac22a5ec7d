"""Optimal transport for ProFashion's Region -> Patch step: batched entropic OT (Sinkhorn).

``from profashion.ot import sinkhorn, sinkhorn_unbalanced``; see :mod:`profashion.ot.sinkhorn` for the
balanced algorithm, its stopping rule, the gradient modes and how degenerate costs are handled, and
:mod:`profashion.ot.unbalanced` for the KL-relaxed marginals that let a row concentrate on few columns.
"""

from profashion.ot.sinkhorn import OTError, sinkhorn
from profashion.ot.unbalanced import sinkhorn_unbalanced

__all__ = ["OTError", "sinkhorn", "sinkhorn_unbalanced"]
