"""Evaluation, one package per benchmark: `mvbench` (multiple choice), `retrieval` (stage 1), `probe`."""
