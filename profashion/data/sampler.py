"""The conditioned triplet sampler of the ASEN++ / RPF code (PROTOCOL.md, "Triplet training").

A triplet is (anchor, positive, negative | attribute): pick an attribute, two distinct values, the
anchor and the positive from the first value, the negative from the second. Triplets are drawn anew
every epoch from a seeded generator, so epoch ``e`` of a run is the same whatever process draws it
(this is what lets ``torchrun`` ranks take disjoint shards of one epoch, and ``--resume`` continue it).

Guards: a value with fewer than two images cannot give an (anchor, positive) pair, so it is never
chosen as the anchor's value (it still serves as a negative); an attribute without such a value, or
with a single value holding images, is never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profashion.data.splits import DatasetError


@dataclass
class TripletSampler:
    """Draws ``(anchor, positive, negative, attribute)`` rows of image ids from labelled images.

    ``labels`` is (n, 3) rows of ``fid attribute value`` (an image may have several rows).
    Attributes are chosen uniformly among the usable ones, then the anchor's value uniformly among
    its values with two or more images, then the negative's value uniformly among the others.
    """

    labels: np.ndarray
    num_values: list[int]

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1, 3)
        self.groups: list[list[np.ndarray]] = [[] for _ in self.num_values]
        for a, nv in enumerate(self.num_values):
            rows = labels[labels[:, 1] == a]
            for v in range(nv):
                self.groups[a].append(np.unique(rows[rows[:, 2] == v, 0]))
        self.usable: list[int] = []
        self.pos_values: list[np.ndarray] = []
        self.neg_values: list[np.ndarray] = []
        for a in range(len(self.num_values)):
            sizes = np.array([len(g) for g in self.groups[a]])
            pos = np.flatnonzero(sizes >= 2)
            nonempty = np.flatnonzero(sizes >= 1)
            self.pos_values.append(pos)
            self.neg_values.append(nonempty)
            if len(pos) >= 1 and len(nonempty) >= 2:
                self.usable.append(a)
        if not self.usable:
            raise DatasetError(
                "no attribute can give a triplet: each needs a value with at least two images and "
                "at least one other value with an image"
            )

    @property
    def skipped_attributes(self) -> list[int]:
        return [a for a in range(len(self.num_values)) if a not in self.usable]

    def sample(self, n: int, seed: int, epoch: int = 0) -> np.ndarray:
        """(n, 4) int64 rows ``anchor, positive, negative, attribute``; seeded by (seed, epoch)."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 0x7121]))
        out = np.empty((n, 4), dtype=np.int64)
        attrs = np.asarray(self.usable)[rng.integers(0, len(self.usable), size=n)]
        out[:, 3] = attrs
        for a in np.unique(attrs):
            idx = np.flatnonzero(attrs == a)
            m = len(idx)
            pos_vals = self.pos_values[a][rng.integers(0, len(self.pos_values[a]), size=m)]
            # negative value: uniform among the non-empty values other than the anchor's
            # (draw an index into the pool with the anchor's value removed, then skip over it)
            neg_pool = self.neg_values[a]
            k = rng.integers(0, len(neg_pool) - 1, size=m)
            rank_of_pos = np.searchsorted(neg_pool, pos_vals)
            neg_vals = neg_pool[k + (k >= rank_of_pos)]
            for v in np.unique(pos_vals):
                sel = np.flatnonzero(pos_vals == v)
                g = self.groups[a][v]
                ai = rng.integers(0, len(g), size=len(sel))
                pi = rng.integers(0, len(g) - 1, size=len(sel))
                pi = pi + (pi >= ai)  # a distinct positive
                out[idx[sel], 0] = g[ai]
                out[idx[sel], 1] = g[pi]
            for v in np.unique(neg_vals):
                sel = np.flatnonzero(neg_vals == v)
                g = self.groups[a][v]
                out[idx[sel], 2] = g[rng.integers(0, len(g), size=len(sel))]
        return out
