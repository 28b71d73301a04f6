"""lookahead_jax: lookahead-amplified next-token targets and stunting in JAX/Flax.

Importing the package changes nothing: the commands set what they need when they start
(sharding.set_cpu_compiler_flags, builders.quiet_tfds_notices).
"""
