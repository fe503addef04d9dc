"""Offline work beside the stream: interaction logs and generators, training examples, the
autoencoder trainer, evaluation and experiments.

The stream's maths stays in :mod:`lte_core` (numpy only, no I/O beyond artifacts, never torch);
everything here may read files and import torch, and nothing in ``lte_core`` imports it.
"""
