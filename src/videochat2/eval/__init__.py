"""Evaluation: MVBench protocol and retrieval metrics."""
