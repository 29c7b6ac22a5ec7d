"""ProFashion's RP module (Region -> Patch), as the paper draws it: the attribute vectors, their cosine correlation
with every patch, the optimal transport that turns it into each attribute's patch weights, and the crop around
the heaviest patches. A mixin of :class:`~profashion.models.profashion.ProFashion` (its parameters, ``image_proj``
and the attribute table or text projection, are the model's own, so checkpoints are unchanged); see that module's
docstring for the transport's four forms."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from profashion.ot import sinkhorn, sinkhorn_unbalanced


class RegionToPatch:
    """RP: f_a, C_cor[a, p] = cos(f_a, f_I[p]), the transport plan and its weights w_a, the crop."""

    # -- attribute side ---------------------------------------------------------------------------------
    def attribute_vectors(self) -> torch.Tensor:
        """(A, d) attribute embeddings f_a."""
        if self.config.attribute_embedding == "clip":
            return self.text_proj(self.text_embeddings)
        return self.attribute_table.weight

    # -- RP -----------------------------------------------------------------------------------------------
    def correlation(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, A, N) cosine correlation of every attribute with every patch."""
        f_img = F.normalize(torch.nan_to_num(self.image_proj(fmap), 0.0, 0.0, 0.0).flatten(2), dim=1, eps=1e-8)
        f_att = F.normalize(torch.nan_to_num(self.attribute_vectors(), 0.0, 0.0, 0.0), dim=-1, eps=1e-8)
        return torch.einsum("ad,bdn->ban", f_att, f_img).clamp(-1, 1)

    def transport(self, corr: torch.Tensor, hw: tuple[int, int],
                  attrs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch weights (B, K, N), each row summing to 1, and the raw plan.

        ``corr`` is (B, A, N); ``attrs`` (B, K) picks the attributes whose weights are returned (all when
        None). For ``"ot"`` the plan is (B, A, N) (all attributes compete); for ``"ot_literal"`` it is
        (B, K, h, w); attention has no plan.
        """
        b, n_attr, n = corr.shape
        mode = self.config.transport
        if not self.config.use_rp:
            k = n_attr if attrs is None else attrs.shape[1]
            return corr.new_full((b, k, n), 1.0 / n), None
        if mode in ("ot", "ot_unbalanced"):
            plan = self._sinkhorn(1.0 - corr, unbalanced=mode == "ot_unbalanced")  # (B, A, N), rows sum to 1/A
            weights = plan * n_attr
            if attrs is not None:
                weights = torch.gather(weights, 1, attrs[..., None].expand(-1, -1, n))
            return weights, plan
        picked = corr if attrs is None else torch.gather(corr, 1, attrs[..., None].expand(-1, -1, n))
        if mode == "attention":
            return torch.softmax(picked / self.config.attention_temperature, dim=-1), None
        k = picked.shape[1]
        plan = self._sinkhorn((1.0 - picked).reshape(b * k, *hw)).view(b, k, *hw)
        return plan.flatten(2), plan

    def _sinkhorn(self, cost: torch.Tensor, unbalanced: bool = False) -> torch.Tensor:
        eps, iters = float(self.config.ot_epsilon), int(self.config.ot_max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an unconverged plan is still a plan
            if unbalanced:  # rows (attributes) exact, columns (patches) KL-relaxed
                plan = sinkhorn_unbalanced(cost, epsilon=eps, reg_m=(float("inf"), float(self.config.ot_tau)),
                                           max_iter=iters, tol=1e-4)
            else:
                plan = sinkhorn(cost, epsilon=eps, max_iter=iters, tol=1e-4)
        return torch.nan_to_num(plan, 0.0, 0.0, 0.0)

    @staticmethod
    def crop_boxes(weights: torch.Tensor, hw: tuple[int, int], threshold: float) -> torch.Tensor:
        """(B, K, N) weights -> (B, K, N) boolean crop: the bounding box of patches >= threshold * max."""
        h, w = hw
        keep = weights >= threshold * weights.amax(-1, keepdim=True)
        keep = keep.view(*weights.shape[:2], h, w)
        rows, cols = keep.any(-1), keep.any(-2)  # (B, K, h), (B, K, w)
        ar_h = torch.arange(h, device=weights.device)
        ar_w = torch.arange(w, device=weights.device)
        big = max(h, w) + 1
        y0 = torch.where(rows, ar_h, big).amin(-1)
        y1 = torch.where(rows, ar_h, -1).amax(-1)
        x0 = torch.where(cols, ar_w, big).amin(-1)
        x1 = torch.where(cols, ar_w, -1).amax(-1)
        in_y = (ar_h >= y0[..., None]) & (ar_h <= y1[..., None])
        in_x = (ar_w >= x0[..., None]) & (ar_w <= x1[..., None])
        return (in_y[..., :, None] & in_x[..., None, :]).flatten(2)
