#!/usr/bin/env bash
# Reproduces docs/benchmarks/: 3 seeds of every benchmarked preset, then the table and curves.
#   pip install -e ".[mujoco]" && bash benchmarks/results.sh
# The MuJoCo runs take ~5 minutes each on 2 cores; RUNS (default /tmp/keras_trpo_runs) holds the
# full run directories, docs/benchmarks/ only their small files.
set -euo pipefail
RUNS=${RUNS:-/tmp/keras_trpo_runs}
for env in Hopper-v5 HalfCheetah-v5 Walker2d-v5 CartPole-v1 Acrobot-v1 Pendulum-v1; do
  for seed in 0 1 2; do
    keras-trpo train "$env" --seed "$seed" --out "$RUNS/$env-seed$seed" --verbose 0
  done
done
python benchmarks/collect_results.py "$RUNS" docs/benchmarks
