#!/usr/bin/env bash
# Reproduces docs/benchmarks/: every preset of rl-baselines3-zoo's 13 TRPO environments on the tuning seeds
# 0-2 and on the fresh seeds 10-14 (never used for tuning or any decision, issue 27), then both tables
# (mean, IQM, 95% bootstrap CI, worst seed, sampled evaluation; rl-zoo and sb3-contrib beside) and the curves.
#   pip install -e ".[mujoco,box2d,results]" && bash benchmarks/results.sh
#   SEEDS="10 11 12 13 14" bash benchmarks/results.sh     # the fresh-seed table only
# Two runs at a time (JOBS, default 2: one per core). Measured here (2-core Xeon, 2026-12-06): the 65
# fresh-seed runs took 85 min (beside other runs for half of it); all 104 about 2.5 hours. RUNS (default /tmp/keras_trpo_runs)
# holds the full run directories, docs/benchmarks/ only their small files.
set -euo pipefail
RUNS=${RUNS:-/tmp/keras_trpo_runs}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"0 1 2 10 11 12 13 14"}
ENVS=${ENVS:-"CartPole-v1 Acrobot-v1 MountainCar-v0 MountainCarContinuous-v0 Pendulum-v1 LunarLander-v3
LunarLanderContinuous-v3 BipedalWalker-v3 Hopper-v5 HalfCheetah-v5 Walker2d-v5 Ant-v5 Swimmer-v5"}  # or a subset
mkdir -p "$RUNS"
run() {  # one run; skipped if it finished before (the script is resumable), restarted otherwise
  local out="$RUNS/$1-seed$2"
  [ -f "$out/results.json" ] && return 0
  rm -rf "$out"
  keras-trpo train "$1" --seed "$2" --out "$out" --verbose 0 > "$out.log" 2>&1 || { echo "failed: $1 seed $2 (see $out.log)"; return 1; }
  echo "done: $1 seed $2"
}
export -f run
export RUNS
for env in $ENVS; do for seed in $SEEDS; do echo "$env $seed"; done; done | xargs -P "$JOBS" -n 2 bash -c 'run "$0" "$1"'
python benchmarks/collect_results.py "$RUNS" docs/benchmarks
