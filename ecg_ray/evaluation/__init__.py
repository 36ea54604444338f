"""Evaluation: per-record aggregation of window outputs, macro ROC-AUC, linear probes."""
