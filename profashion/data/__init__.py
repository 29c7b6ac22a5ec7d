"""Datasets: the ASEN split format, CSV catalogues, Zappos triplets, the synthetic garments, sampling."""
