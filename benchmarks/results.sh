#!/usr/bin/env bash
# Reproduces docs/benchmarks/: 3 seeds of each of rl-baselines3-zoo's 13 TRPO environments, then the
# table and the curves (rl-zoo's score drawn as a dashed line).
#   pip install -e ".[mujoco,box2d]" && bash benchmarks/results.sh
# Two runs at a time (JOBS, default 2: one per core).
# The MuJoCo runs take ~5 minutes each on 2 cores; RUNS (default /tmp/keras_trpo_runs) holds the
# full run directories, docs/benchmarks/ only their small files.
set -euo pipefail
RUNS=${RUNS:-/tmp/keras_trpo_runs}
JOBS=${JOBS:-2}
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
for env in $ENVS; do for seed in 0 1 2; do echo "$env $seed"; done; done | xargs -P "$JOBS" -n 2 bash -c 'run "$0" "$1"'
python benchmarks/collect_results.py "$RUNS" docs/benchmarks
