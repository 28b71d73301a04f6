"""Datasets: the testbeds (registry.py and one module each), text files and TFDS sets
(builders.py), tokenizers, what the commands prepare (prepare.py), the grain pipeline."""
