"""Training: conditioned triplet loss, sampler, trainer, checkpoints."""
