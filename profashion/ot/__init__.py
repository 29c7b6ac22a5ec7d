"""Optimal transport for ProFashion's Region -> Patch step: batched entropic OT (Sinkhorn).

``from profashion.ot import sinkhorn``; see :mod:`profashion.ot.sinkhorn` for the algorithm, its
stopping rule, the gradient modes and how degenerate costs are handled.
"""

from profashion.ot.sinkhorn import OTError, sinkhorn

__all__ = ["OTError", "sinkhorn"]
