"""Evaluation: the ASEN retrieval mAP protocol, triplet accuracy, localisation scores."""
