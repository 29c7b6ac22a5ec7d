"""Evaluation: the ASEN retrieval mAP protocol, triplet accuracy, localisation scores, faithfulness of maps
(deletion / insertion curves, :mod:`profashion.evaluation.faithfulness`)."""
