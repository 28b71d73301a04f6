"""The mask spectrum on the learnable path-star setting: next-token training (rho = 1)
against mixes of next-token and masked (BERT-style) examples, rho = 0.5 and 0.1
(docs/design.md section 8). Does masking change G or the depth-2 first-step accuracy?

    C=configs/experiments
    lookahead-jax compare --configs=$C/path_star.py:none,$C/path_star_rho.py \
        --workdir=runs/ps --seeds=2 --records=results/path_star

Data, model, schedule, monitor and evaluation are configs/experiments/path_star.py's in
mode `none` (no stunting), with one more embedding for [MASK]. rho_R trains a share R of
the examples as next-token examples (the answer weighed, causal attention) and the rest
with 15% of their tokens masked independently and predicted under bidirectional
attention, edge list included (masked.py), one parameter set. The causal mode of every
run is a next-token model, read like any GPT's: test NLL, first-step accuracy by depth,
G of both lookaheads; the comparison pairs each rho with path_star's baseline (mode
`none`, the same run but for [MASK]'s embedding) by seed and test graph.
"""

from lookahead_jax import config as config_lib

RHO = {"rho_1": 1.0, "rho_0.5": 0.5, "rho_0.1": 0.1}
EXPERIMENTS = tuple(RHO)


def get_config(mode: str = "rho_1"):
  config = config_lib.beside(__file__, "path_star.py").get_config("none")
  config.model.vocab_size += 1  # [MASK]
  config.objective.kind = "spectrum"
  config.objective.rho = RHO[mode]
  config.objective.mask_rate = 0.15
  config.objective.mean_span = 0.0  # tokens masked independently, as in BERT
  return config
