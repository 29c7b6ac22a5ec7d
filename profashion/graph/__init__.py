"""Neural semantic aggregation (ProFashion, Eqs. 7-9): attribute graph, graph smoothing, untied MLP
encoders, seeded K-means, high-confidence selection and the cluster-level losses L_p and L_n.

Each piece is a plain function (or a small module) usable on its own; :class:`SemanticAggregation`
chains them the way ProFashion trains:

1. :func:`attribute_graph`: nodes are samples (superpixel features of an image under an attribute);
   an edge joins two samples that share the attribute AND its value, weighted by the cosine similarity
   of their features (negative similarities are clipped to 0; a sample never links to itself);
2. :func:`smooth`: ``X~ = (I + D^-1 A)^t X`` (the low-pass filter of SCGC, TNNLS 2023, in the form the
   ProFashion paper writes it; an isolated node keeps its own feature);
3. the smoothed features are centred (batch mean removed; our addition: trunk features after a ReLU
   share a large common component, and without centring every encoder output points the same way, the
   cluster centres coincide and ``L_n`` sits at 1 whatever the encoders do, measured on the synthetic
   garments), then ``M`` parameter-untied MLP encoders (:class:`UntiedEncoders`), each output
   L2-normalised: ``M`` views;
4. :func:`kmeans` (torch, seeded k-means++) on the mean of the views;
5. :func:`high_confidence`: the top ``tau`` of samples by ``exp(-||E_i - C_c(i)||^2)`` (CCGC, AAAI 2023);
6. :func:`cluster_losses`: per view, the centre of every cluster over its high-confidence samples;
   ``L_p`` pulls the same cluster's centres of different views together (``||C^m_k - C^m'_k||^2``, mean
   over view pairs and clusters) and ``L_n`` pushes the centres of different clusters apart (mean cosine
   similarity of ``C^m_k`` and ``C^m'_l``, ``k != l``, over all view pairs including ``m = m'``);
   ``L = L_p + 0.5 L_n``.

Degenerate batches are defined: fewer than two clusters (one value, one sample) give ``L_n = 0``; no
edge leaves the features as they are; non-finite features are zeroed before anything else, so the
losses are always finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SemanticAggregation",
    "UntiedEncoders",
    "attribute_graph",
    "cluster_losses",
    "high_confidence",
    "kmeans",
    "smooth",
]


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def attribute_graph(features: torch.Tensor, attributes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(N, N) weighted adjacency: ``A_ij = max(0, cos(x_i, x_j))`` when samples i and j share attribute and value.

    ``values < 0`` (unknown) never link. The diagonal is 0.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {tuple(features.shape)}")
    n = len(features)
    attributes = torch.as_tensor(attributes, device=features.device).reshape(-1)
    values = torch.as_tensor(values, device=features.device).reshape(-1)
    if len(attributes) != n or len(values) != n:
        raise ValueError(f"expected {n} attributes and values, got {len(attributes)} and {len(values)}")
    x = F.normalize(_finite(features), dim=1, eps=1e-12)
    same = (attributes[:, None] == attributes[None]) & (values[:, None] == values[None]) & (values[:, None] >= 0)
    same.fill_diagonal_(False)
    return (x @ x.T).clamp_min(0) * same


def smooth(features: torch.Tensor, adjacency: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """``(I + D^-1 A)^t X``; rows of A without any weight contribute nothing (the node keeps its feature)."""
    if steps < 0:
        raise ValueError(f"steps must be 0 or more, got {steps}")
    degree = adjacency.sum(1, keepdim=True)
    walk = torch.where(degree > 0, adjacency / degree.clamp_min(1e-12), torch.zeros_like(adjacency))
    x = _finite(features)
    for _ in range(steps):
        x = x + walk @ x
    return x


class UntiedEncoders(nn.Module):
    """``M`` MLP encoders with separate parameters; ``forward(x) -> (M, N, out)``, each row L2-normalised."""

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: int = 128, views: int = 3):
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
            for _ in range(views)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.normalize(e(x), dim=-1, eps=1e-12) for e in self.encoders])


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded k-means++ then Lloyd iterations on (N, F) points. Returns (labels (N,), centres (k, F)).

    ``k`` is clipped to ``[1, N]``; an empty cluster is re-seeded on the point farthest from its centre.
    The same seed and input give the same result on any device (the draws are made on the CPU).
    """
    x = _finite(x.detach()).float()
    n = len(x)
    if n == 0:
        raise ValueError("kmeans needs at least one point")
    k = max(1, min(int(k), n))
    gen = torch.Generator().manual_seed(int(seed))
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2.cpu().double()
        if float(p.sum()) <= 0:  # all remaining points coincide with a centre: take any unused one
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(p / p.sum(), 1, generator=gen))
        centres.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(centres)
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        onehot = F.one_hot(labels, k).float()
        counts = onehot.sum(0)
        new = (onehot.T @ x) / counts.clamp_min(1)[:, None]
        empty = counts == 0
        if empty.any():
            far = torch.cdist(x, c).min(1).values.argsort(descending=True)
            new[empty] = x[far[: int(empty.sum())]]
        new_labels = torch.cdist(x, new).argmin(1)
        c = new
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels, c


def high_confidence(embeddings: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor,
                    tau: float = 0.5) -> torch.Tensor:
    """Boolean (N,) mask of the ``ceil(tau * N)`` samples with the highest ``exp(-||E_i - C_c(i)||^2)``."""
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    n = len(embeddings)
    conf = torch.exp(-((embeddings.detach() - centres[labels]) ** 2).sum(1))
    keep = max(1, int(torch.ceil(torch.tensor(tau * n)).item()))
    mask = torch.zeros(n, dtype=torch.bool, device=embeddings.device)
    mask[conf.argsort(descending=True)[:keep]] = True
    return mask


def cluster_losses(views: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_p, L_n)`` from (M, N, F) normalised views, cluster labels (N,) and the selected samples (N,)."""
    m = views.shape[0]
    onehot = F.one_hot(labels[selected], k).to(views.dtype)  # (S, k)
    counts = onehot.sum(0)
    present = counts > 0
    if not present.any():
        zero = views.sum() * 0
        return zero, zero
    centres = torch.einsum("sk,msf->mkf", onehot, views[:, selected]) / counts.clamp_min(1)[None, :, None]
    centres = F.normalize(centres[:, present], dim=-1, eps=1e-12)  # (M, K', F)
    kk = centres.shape[1]
    zero = views.sum() * 0
    if m > 1:
        i, j = torch.triu_indices(m, m, offset=1)
        l_p = ((centres[i] - centres[j]) ** 2).sum(-1).mean()
    else:
        l_p = zero
    if kk > 1:
        sims = torch.einsum("akf,blf->abkl", centres, centres)  # (M, M, K', K')
        off = ~torch.eye(kk, dtype=torch.bool, device=views.device)
        l_n = sims[:, :, off].mean()
    else:
        l_n = zero
    return l_p, l_n


class SemanticAggregation(nn.Module):
    """Graph smoothing + ``M`` untied encoders + K-means + high-confidence selection + ``L_p + w_n L_n``.

    ``forward(features (N, F), attributes (N,), values (N,)) -> dict`` with ``loss``, ``l_p``, ``l_n`` and
    the number of clusters. ``k`` defaults to the number of distinct known (attribute, value) pairs
    (at least 1, at most N).
    """

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: int = 128, views: int = 3, steps: int = 2,
                 tau: float = 0.5, ln_weight: float = 0.5, use_lp: bool = True, use_ln: bool = True,
                 kmeans_iters: int = 20, seed: int = 0, center: bool = True):
        super().__init__()
        self.center = center
        self.encoders = UntiedEncoders(in_dim, out_dim, hidden, views)
        self.steps, self.tau, self.ln_weight = steps, tau, ln_weight
        self.use_lp, self.use_ln = use_lp, use_ln
        self.kmeans_iters, self.seed = kmeans_iters, seed
        self.calls = 0  # K-means seed = seed + calls: reproducible runs, fresh draws every step

    def forward(self, features: torch.Tensor, attributes: torch.Tensor, values: torch.Tensor,
                k: int | None = None) -> dict[str, torch.Tensor]:
        features = _finite(features)
        attributes = torch.as_tensor(attributes, device=features.device).reshape(-1)
        values = torch.as_tensor(values, device=features.device).reshape(-1)
        adjacency = attribute_graph(features, attributes, values)
        x = smooth(features, adjacency, self.steps)
        if self.center:
            x = x - x.mean(0, keepdim=True)
        views = self.encoders(x)
        if k is None:
            known = values >= 0
            pairs = torch.unique(attributes[known] * 100_003 + values[known]) if known.any() else values[:0]
            k = len(pairs)
        k = max(1, min(int(k), len(features)))
        mean = F.normalize(views.detach().mean(0), dim=-1, eps=1e-12)
        labels, centres = kmeans(mean, k, self.kmeans_iters, seed=self.seed + self.calls)
        self.calls += 1
        selected = high_confidence(mean, labels, centres, self.tau)
        l_p, l_n = cluster_losses(views, labels, selected, k)
        loss = views.sum() * 0
        if self.use_lp:
            loss = loss + l_p
        if self.use_ln:
            loss = loss + self.ln_weight * l_n
        return {"loss": loss, "l_p": l_p.detach(), "l_n": l_n.detach(), "clusters": torch.tensor(k)}
