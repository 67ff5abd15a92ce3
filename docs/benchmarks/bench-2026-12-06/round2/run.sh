#!/bin/bash
# (paths under /work/s27 are the session scratch directory; the outputs were copied here)
# Final idle-machine runs of this session (issue 26, round 2): two Hopper profiles with the bare run, then
# four `--only cartpole --only update` runs, on the committed code.
cd /work/main && . .venv/bin/activate
echo "commit: $(git log --oneline -1)"
echo "start $(date) | $(uptime)"
for i in A B; do python benchmarks/bench.py --only profile --profile-bare > /work/s27/bench/final-profile-$i.txt 2>&1; echo "profile $i done $(date) | $(uptime)"; done
for i in 1 2 3 4; do python benchmarks/bench.py --only cartpole --only update > /work/s27/bench/final-cartpole-update-$i.txt 2>&1; done
echo "end $(date) | $(uptime)"
