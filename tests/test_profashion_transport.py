"""ProFashion's transport choices: the balanced plan's bound, the unbalanced variant that lifts it, the shipped
checkpoint unchanged.

With the balanced ``transport="ot"`` an attribute's weights are at most A/N per patch (A attribute rows of mass
1/A, N patch columns of mass 1/N); ``"ot_unbalanced"`` relaxes the patch marginal with a KL penalty
(:func:`profashion.ot.sinkhorn_unbalanced`) so that one attribute can take most of a small part. Tiny models on
48 px images; the shipped checkpoint is loaded once. Runs in seconds on one core.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from profashion.models import ModelError, build_model, load_model, save_checkpoint
from profashion.models.profashion import ProFashion
from profashion.ot import OTError, sinkhorn, sinkhorn_unbalanced, unbalanced

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "profashion"
NUM_VALUES = [3, 4, 2, 5]  # A = 4 attributes
A = len(NUM_VALUES)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest.one_thread


def tiny(**overrides) -> ProFashion:
    torch.manual_seed(0)
    cfg = {"image_size": 48, "resize": 48, "superpixels": "grid", "n_segments": 16, **overrides}
    return build_model("profashion", "scratch", NUM_VALUES, **cfg).eval()


def images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def toy_correlation(b: int = 2, n: int = 36, part=(7, 8)) -> torch.Tensor:
    """(B, A, N): attribute 0 matches the patches in ``part`` (correlation 1) and nothing else (-1); the other
    attributes like every patch alike (0)."""
    corr = torch.zeros(b, A, n)
    corr[:, 0] = -1.0
    corr[:, 0, list(part)] = 1.0
    return corr


# -- the bound and the variant that lifts it ---------------------------------------------------------


def test_balanced_ot_stays_under_a_over_n_and_unbalanced_goes_past_it():
    n, part = 36, (7, 8)
    corr = toy_correlation(n=n, part=part)
    bound = A / n  # the balanced plan's largest row-normalised weight per patch
    w_ot, _ = tiny(transport="ot").transport(corr, (6, 6))
    w_uot, plan = tiny(transport="ot_unbalanced").transport(corr, (6, 6))
    assert float(w_ot[:, 0].amax()) <= bound + 1e-4  # "ot" cannot concentrate
    assert float(w_ot[:, 0, list(part)].sum(-1).amax()) <= len(part) * bound + 1e-4
    assert float(w_uot[:, 0, list(part)].amin()) > 1.5 * bound  # every preferred patch past the bound
    assert float(w_uot[:, 0, list(part)].sum(-1).amin()) > 0.5  # most of the attribute's mass on its part
    assert plan.shape == (2, A, n)
    torch.testing.assert_close(plan.sum(-1), torch.full((2, A), 1 / A), atol=1e-4, rtol=0)  # rows stay exact
    assert float(plan.sum(1)[:, list(part)].amax()) > 1 / n  # a patch may take more than its 1/N


def test_tau_interpolates_between_ot_and_attention():
    corr = torch.rand(2, A, 25, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ot_w, _ = tiny(transport="ot", ot_max_iter=2000).transport(corr, (5, 5))
    big, _ = tiny(transport="ot_unbalanced", ot_tau=1e6, ot_max_iter=2000).transport(corr, (5, 5))
    torch.testing.assert_close(big, ot_w, atol=2e-3, rtol=0)  # tau -> inf: the balanced plan
    small, _ = tiny(transport="ot_unbalanced", ot_tau=1e-6).transport(corr, (5, 5))
    attention = torch.softmax(corr / 0.1, dim=-1)  # tau -> 0: attention at temperature epsilon
    torch.testing.assert_close(small, attention, atol=1e-4, rtol=0)
    mid, _ = tiny(transport="ot_unbalanced", ot_tau=0.1).transport(corr, (5, 5))
    assert (mid - ot_w).abs().max() > 1e-2 and (mid - attention).abs().max() > 1e-2


def test_the_solver_matches_pot_in_float64():
    ot = pytest.importorskip("ot")
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 5, 12, generator=g, dtype=torch.float64) * 2
    for reg_m in ((math.inf, 0.1), (math.inf, 2.0), (0.5, 0.2)):
        plan = sinkhorn_unbalanced(cost, 0.1, reg_m, tol=1e-13, max_iter=50_000)
        for i in range(3):
            ref = ot.unbalanced.sinkhorn_unbalanced(np.full(5, 0.2), np.full(12, 1 / 12), cost[i].numpy(), 0.1,
                                                    reg_m, numItermax=200_000, stopThr=1e-15)
            np.testing.assert_allclose(plan[i].numpy(), ref, atol=1e-10, rtol=0)


def test_the_two_kernels_agree_and_bad_input_is_refused():
    cost = torch.rand(2, 4, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a, b = torch.full((2, 4), 0.25, dtype=torch.float64), torch.full((2, 9), 1 / 9, dtype=torch.float64)
    for rho in ((1.0, 0.75), (0.5, 0.75)):
        plans = [kernel(cost, 0.1, rho, a, b, 10_000, 1e-13, "none", {})
                 for kernel in (unbalanced._iterate_exp, unbalanced._iterate_log)]
        torch.testing.assert_close(plans[0], plans[1], atol=1e-12, rtol=0)
    small, info = sinkhorn_unbalanced(cost.float(), 0.01, (math.inf, 0.3), tol=1e-6, max_iter=10_000,
                                      return_info=True)
    assert info["method"] == "log" and info["converged"]  # 1/0.01 in float32 is past the exp kernel's range
    torch.testing.assert_close(small.sum(-1), torch.full((2, 4), 0.25), atol=1e-5, rtol=0)
    with pytest.raises(OTError, match="reg_m"):
        sinkhorn_unbalanced(cost, 0.1, (math.inf, 0.0))
    with pytest.raises(OTError, match="non-finite"):
        sinkhorn_unbalanced(torch.full((2, 2), math.nan), 0.1)


# -- settings ------------------------------------------------------------------------------------------


def test_config_round_trips_and_unknown_choices_are_one_sentence(tmp_path):
    m = tiny(transport="ot_unbalanced", ot_tau=0.05)
    ckpt = save_checkpoint(m, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["config"]["transport"] == "ot_unbalanced" and cfg["config"]["ot_tau"] == 0.05
    back = load_model(ckpt, expect_model="profashion")
    assert back.config == m.config
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(back.embed_all(x), m.embed_all(x), atol=1e-6, rtol=0)
    for bad, pattern in (({"transport": "uot"}, "'transport' must be one of ot, ot_literal, attention, "
                                                "ot_unbalanced, got 'uot'"),
                         ({"ot_tau": 0.0}, "'ot_tau' must be between")):
        with pytest.raises(ModelError, match=pattern) as err:
            tiny(**bad)
        text = str(err.value)
        assert "\n" not in text and text.count(". ") == 0  # one sentence


# -- gradients, batch and shapes as "ot" ---------------------------------------------------------------


def test_gradients_reach_the_correlation_and_the_trunk():
    m = tiny(transport="ot_unbalanced").train()
    e = m(images(6, seed=3), torch.arange(6) % A)
    (e * torch.randn_like(e)).sum().backward()
    for p in (m.image_proj.weight, m.attribute_table.weight, m.backbone.stem[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    corr = (torch.rand(1, A, 9, dtype=torch.float64) * 2 - 1).requires_grad_()
    torch.autograd.gradcheck(lambda c: sinkhorn_unbalanced(1 - c, 0.2, (math.inf, 0.3), tol=1e-12,
                                                           max_iter=10_000), (corr,))


def test_batch_and_shapes_match_ot():
    x, ids = images(3, seed=4), torch.tensor([0, 3, 1])
    ot_m, uot = tiny(transport="ot"), tiny(transport="ot_unbalanced")
    corr = torch.rand(3, A, 36) * 2 - 1
    for attrs in (None, ids[:, None], torch.stack([ids, ids.flip(0)], 1)):
        (w1, p1), (w2, p2) = ot_m.transport(corr, (6, 6), attrs), uot.transport(corr, (6, 6), attrs)
        assert w1.shape == w2.shape and p1.shape == p2.shape
        torch.testing.assert_close(w2.sum(-1), torch.ones(w2.shape[:2]), atol=1e-4, rtol=0)
    one, _ = uot.transport(corr[:1], (6, 6))
    torch.testing.assert_close(one, uot.transport(corr, (6, 6))[0][:1], atol=1e-6, rtol=0)  # per image
    with torch.no_grad():
        all_ = uot.embed_all(x)
        picked = uot.embed(x, ids)
    assert all_.shape == ot_m.embed_all(x).shape == (3, A, 64)
    torch.testing.assert_close(picked, all_[torch.arange(3), ids], atol=1e-4, rtol=0)
    ex = uot.explain(x[0], 2)
    plan = ex.map("ot_plan")
    assert tuple(plan.data.shape) == (A, 36) and plan.highlight_row == 2 and "KL penalty" in plan.about
    assert abs(float(ex.map("ot_weights").data.sum()) - 1) < 1e-4


def test_degenerate_inputs_never_give_nan():
    m = tiny(transport="ot_unbalanced")
    w, _ = m.transport(torch.zeros(2, A, 16), (4, 4))  # every patch alike: uniform weights
    torch.testing.assert_close(w, torch.full((2, A, 16), 1 / 16), atol=1e-6, rtol=0)
    x = images(2)
    x[0] = float("nan")
    with torch.no_grad():
        assert torch.isfinite(m.embed_all(x)).all()
    empty, _ = m.transport(torch.zeros(0, A, 16), (4, 4))  # an empty batch, as "ot" gives it
    assert empty.shape == tiny(transport="ot").transport(torch.zeros(0, A, 16), (4, 4))[0].shape == (0, A, 16)


# -- the shipped checkpoint is untouched ----------------------------------------------------------------

# ``embed`` of the shipped checkpoint on the image below under attributes 0, 4, 9 (first four dimensions),
# measured before "ot_unbalanced" existed (the same numbers as the code before this change, bit for bit).
SHIPPED_EMBEDDING = [[0.0977, 0.1845, -0.0206, -0.0810], [0.1973, 0.2047, -0.2117, 0.0442],
                     [0.1213, 0.1763, -0.1856, -0.0433]]


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped ProFashion checkpoint")
def test_the_shipped_checkpoint_loads_as_balanced_ot_with_the_same_outputs():
    m = load_model(SHIPPED)
    assert m.config.transport == "ot"
    torch.manual_seed(0)
    x = torch.rand(3, 3, 160, 160) * 2 - 1
    with torch.no_grad():
        e = m.embed(x, torch.tensor([0, 4, 9]))
        fmap, _ = m._features(x)
        corr = m.correlation(fmap)
        weights, plan = m.transport(corr, tuple(fmap.shape[-2:]))
    torch.testing.assert_close(e[:, :4], torch.tensor(SHIPPED_EMBEDDING), atol=2e-4, rtol=0)
    reference = sinkhorn(1.0 - corr, epsilon=0.1, max_iter=200, tol=1e-4) * corr.shape[1]
    torch.testing.assert_close(weights, reference, atol=0, rtol=0)  # the balanced solver, unchanged
    assert float(weights.amax()) <= corr.shape[1] / corr.shape[2] + 1e-3  # and so under the bound A/N
