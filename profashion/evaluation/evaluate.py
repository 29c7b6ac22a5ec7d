"""Evaluating a model on a split with the ASEN protocol (see retrieval_map.py for the protocol itself)."""

from __future__ import annotations

import numpy as np
import torch

from profashion.data.loading import SplitImages, to_model_input
from profashion.data.splits import SplitDataset
from profashion.evaluation.retrieval_map import MAPResult, eval_rows, mean_average_precision
from profashion.models.base import RetrievalModel


@torch.no_grad()
def embed_rows(model: RetrievalModel, images: SplitImages, rows: np.ndarray, batch_size: int = 256,
               progress: bool = False, desc: str = "embedding", trunk=None) -> np.ndarray:
    """Embeddings of ``rows`` (n, >=2: fid, attribute, ...) each conditioned on its own attribute.

    ``trunk`` (a :class:`~profashion.train.trainer.FrozenTrunk` of these images) embeds from cached trunk
    features instead of the images (the trainer's validation of a frozen-trunk model)."""
    was_training = model.training
    model.eval()
    device = model.device
    out = np.empty((len(rows), 0), dtype=np.float32)
    chunks = []
    it = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=desc, unit="batch", leave=False)
    for i in it:
        r = rows[i:i + batch_size]
        attrs = torch.as_tensor(r[:, 1], device=device)
        if trunk is not None:
            emb = model.embed_from_trunk(trunk.get(r[:, 0], device), attrs)
        else:
            emb = model.embed(to_model_input(images.get(r[:, 0]), images.preprocess, device=device), attrs)
        chunks.append(emb.float().cpu().numpy())
    if chunks:
        out = np.concatenate(chunks)
    model.train(was_training)
    return out


def evaluate_model(model: RetrievalModel, dataset: SplitDataset, split: str = "valid", batch_size: int = 256,
                   images: SplitImages | None = None, progress: bool = False, trunk=None) -> MAPResult:
    """Retrieval mAP of ``model`` on the query/candidate files of ``split`` (PROTOCOL.md); ``trunk``: see
    :func:`embed_rows`."""
    qs, cs = eval_rows(dataset, split)
    if images is None:
        fids = np.concatenate([qs[:, 0], cs[:, 0]])
        images = SplitImages(dataset, split, model.preprocess, fids=fids, progress=progress)
    q = embed_rows(model, images, qs, batch_size, progress, f"{split} queries", trunk)
    c = embed_rows(model, images, cs, batch_size, progress, f"{split} candidates", trunk)
    return mean_average_precision(q, qs[:, 1], qs[:, 2], c, cs[:, 1], cs[:, 2],
                                  dataset.schema.num_attributes).attach_split(qs, cs)
