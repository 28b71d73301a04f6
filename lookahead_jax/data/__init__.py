"""Tokenizers, TFDS builders for the testbeds and text files, and the grain input pipeline."""
