"""The neural semantic aggregation building blocks (profashion.graph), each alone and chained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from profashion.graph import (
    SemanticAggregation,
    UntiedEncoders,
    attribute_graph,
    cluster_losses,
    high_confidence,
    kmeans,
    smooth,
)


def test_attribute_graph_links_only_same_attribute_and_value():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    attrs = torch.tensor([0, 0, 0, 0, 1])
    values = torch.tensor([2, 2, 1, 2, 2])
    a = attribute_graph(x, attrs, values)
    assert a.shape == (5, 5)
    assert torch.equal(a.diagonal(), torch.zeros(5))
    torch.testing.assert_close(a[0, 1], torch.tensor(2 ** -0.5))  # cosine weight
    assert a[0, 2] == 0  # other value
    assert a[0, 3] == 0  # same value but negative cosine: clipped
    assert a[0, 4] == 0  # same value, other attribute
    torch.testing.assert_close(a, a.T)
    unknown = attribute_graph(x, attrs, torch.full((5,), -1))
    assert unknown.abs().sum() == 0


def test_smooth_is_i_plus_random_walk_to_the_power_t():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    a = torch.rand(6, 6)
    a = (a + a.T) / 2
    a[5] = 0
    a[:, 5] = 0  # an isolated node
    p = torch.eye(6) + torch.nan_to_num(a / a.sum(1, keepdim=True))
    torch.testing.assert_close(smooth(x, a, 3), torch.linalg.matrix_power(p, 3) @ x)
    torch.testing.assert_close(smooth(x, a, 2)[5], x[5] * 1.0)
    torch.testing.assert_close(smooth(x, a, 0), x)
    with pytest.raises(ValueError, match="steps"):
        smooth(x, a, -1)


def test_untied_encoders_are_separate_and_normalised():
    enc = UntiedEncoders(8, 4, hidden=16, views=3)
    out = enc(torch.randn(5, 8))
    assert out.shape == (3, 5, 4)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 5))
    w = [e[0].weight for e in enc.encoders]
    assert not torch.equal(w[0], w[1]) and w[0].data_ptr() != w[1].data_ptr()


def test_kmeans_finds_separated_clusters_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centres])
    labels, c = kmeans(x, 3, seed=1)
    for blk in labels.view(3, 20):
        assert (blk == blk[0]).all()
    assert len(set(labels.view(3, 20)[:, 0].tolist())) == 3
    l2, c2 = kmeans(x, 3, seed=1)
    assert torch.equal(labels, l2) and torch.equal(c, c2)
    # k larger than the points, identical points, one point
    lab, cen = kmeans(torch.ones(4, 2), 9)
    assert cen.shape == (4, 2) and torch.isfinite(cen).all()
    lab, cen = kmeans(torch.zeros(1, 3), 2)
    assert lab.tolist() == [0]


def test_high_confidence_keeps_the_closest_half():
    e = torch.tensor([[0.0], [0.1], [1.0], [2.0]])
    labels = torch.zeros(4, dtype=torch.long)
    keep = high_confidence(e, labels, torch.zeros(1, 1), tau=0.5)
    assert keep.tolist() == [True, True, False, False]
    assert high_confidence(e, labels, torch.zeros(1, 1), tau=0.1).sum() == 1
    with pytest.raises(ValueError, match="tau"):
        high_confidence(e, labels, torch.zeros(1, 1), tau=0)


def test_cluster_losses_follow_the_definitions():
    views = F.normalize(torch.tensor([
        [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]],
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
    ]), dim=-1)
    labels = torch.tensor([0, 0, 1, 1])
    l_p, l_n = cluster_losses(views, labels, torch.ones(4, dtype=torch.bool), 2)
    c = F.normalize(torch.stack([views[:, :2].mean(1), views[:, 2:].mean(1)], 1), dim=-1)  # (M, K, F)
    torch.testing.assert_close(l_p, ((c[0] - c[1]) ** 2).sum(-1).mean())
    sims = torch.einsum("akf,blf->abkl", c, c)
    torch.testing.assert_close(l_n, (sims[..., 0, 1] + sims[..., 1, 0]).sum() / 8)
    # one cluster: no negative pairs
    _, l_n1 = cluster_losses(views, torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool), 1)
    assert l_n1 == 0


def test_semantic_aggregation_trains_and_handles_degenerate_batches():
    torch.manual_seed(0)
    agg = SemanticAggregation(6, out_dim=4, hidden=8, views=3)
    x = torch.randn(12, 6, requires_grad=True)
    attrs = torch.tensor([0, 1] * 6)
    values = torch.tensor([0, 0, 1, 1, 2, 2] * 2)
    out = agg(x, attrs, values)
    assert torch.isfinite(out["loss"]) and int(out["clusters"]) == 6
    out["loss"].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in agg.parameters())
    # one value only, a single sample, non-finite features, unknown values: always finite
    for feats, a, v in [
        (torch.randn(8, 6), torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)),
        (torch.randn(1, 6), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
        (torch.full((4, 6), float("nan")), torch.zeros(4, dtype=torch.long), torch.arange(4)),
        (torch.tensor([[float("inf")] * 6] * 3), torch.zeros(3, dtype=torch.long), torch.full((3,), -1)),
    ]:
        res = agg(feats, a, v)
        assert torch.isfinite(res["loss"]), res
    # ablations: without L_p and without L_n
    only_n = SemanticAggregation(6, 4, 8, use_lp=False)(x, attrs, values)
    torch.testing.assert_close(only_n["loss"], 0.5 * only_n["l_n"])
    only_p = SemanticAggregation(6, 4, 8, use_ln=False)(x, attrs, values)
    torch.testing.assert_close(only_p["loss"], only_p["l_p"])
