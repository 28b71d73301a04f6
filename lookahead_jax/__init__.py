"""lookahead_jax: lookahead-amplified next-token targets and stunting in JAX/Flax."""
