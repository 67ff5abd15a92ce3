"""tf.distribute: a data-parallel update equals the single-device one; workers stay identical.

Both tests start fresh processes: logical CPU devices and a multi-worker cluster
must be configured before TensorFlow initializes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


# Relative gap allowed between the mirrored and the single-device update, both in float64. They compute
# the same batch means in another summation order (two half-batch means, then their mean). Each reordered
# sum differs by a few units of float64 roundoff u = 2**-53 = 1.1e-16; conjugate gradient on an
# ill-conditioned Fisher amplifies that by a factor A. Measured on Intel Xeon (2026-12-06): A <= 20 for
# the MLPs, 3e6 for the CNN (a gap of 3.5e-10). A wrong distributed update is another function of the
# batch, measured there with one-line mutations of distribute.py: a sum over replicas where a mean
# belongs gives gaps of 4e-3 (kl) to 1.2 (critic); one replica's share dropped, 8e-3 (normalizer) to 1.2;
# the critic's gradient summed, 0.95 (its Adam state). The bound 1e10 u = 1.1e-6 sits near the geometric
# mean of the two scales: another CPU's kernels would need an amplification 3000 times larger than any
# measured to fail it, and a wrong update 3000 times smaller to pass. (In float32, u = 6e-8, the two
# scales overlap: a 2% gap was seen on AMD EPYC, which is why the comparison runs in float64.)
ROUNDOFF = np.finfo(np.float64).eps / 2
BOUND = 1e10 * ROUNDOFF
METRICS = ("kl", "surrogate_improvement", "expected_improvement", "value_loss", "explained_variance", "entropy")
# The CartPole fit under the strategy and its export do not depend on the kind of the compared update:
# distributed_update.py runs them for this kind only (each run costs a trace and an export).
FIT_KIND = "discrete"


@pytest.mark.parametrize("kind", ["discrete", "box", "dict", "masked", "recurrent"])
def test_mirrored_update_over_two_replicas_equals_the_single_device_update(kind, tmp_path):
    """Catches: any reduction of the distributed update that is not the batch mean (a sum over replicas, a share dropped).
    "masked" (issue 28: Discrete actions with action masks, which split with the batch) also catches the replicas'
    Fisher products without their share of the masks (``local_product_fn(o, p)`` -> ``(o[:1], p)`` in
    ``Objective.fisher_vector_product``'s distributed branch). "recurrent" (issue 29: LSTM towers, sequences split
    whole, each replica's share with its own padding) also catches local weighted means that are not pooled
    (``Objective``'s ``total`` as the local ``Σ w``)."""
    out = tmp_path / "result.json"
    fit = ["fit"] if kind == FIT_KIND else []
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "distributed_update.py"), kind, str(out), *fit],
        check=True, timeout=600, capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["replicas"] == 2
    assert result["dtypes"] == ["float64"]  # the comparison really ran in float64
    # One update on a batch split over 2 replicas: the policy's step, the critic's (weights and Adam
    # state) and the normalizer's new statistics, each as ||mirrored - single|| / ||single - start||.
    assert max(result["relative"].values()) <= BOUND, result["relative"]
    single, mirrored = result["single_history"], result["mirrored_history"]
    for key in METRICS:
        # Relative to the metric, floored at 1e-3 so that a metric near 0 does not ask for a gap below roundoff.
        scale = max(abs(single[key][0]), 1e-3)
        assert abs(mirrored[key][0] - single[key][0]) <= BOUND * scale, (key, mirrored[key], single[key])
    assert mirrored["step_accepted"] == single["step_accepted"] == [1.0]
    assert mirrored["cg_iterations"] == single["cg_iterations"]
    assert "a batch of 255 steps does not split evenly over this worker's 2 replicas" in result["uneven_error"]
    if kind == FIT_KIND:
        # A real fit on CartPole rollouts under the strategy: one collection per update, on-policy
        # (train_step refuses a batch from other weights), replicas' copies identical.
        assert result["collected"] == 3 * 256 and result["policy_version"] == 3
        assert result["fit_history"]["step_accepted"] == [1.0, 1.0, 1.0]
        assert result["replica_weights_equal"]
        assert result["export_matches"]  # the SavedModel serves the strategy-trained policy


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_loopback_end_with_identical_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = [
            sys.executable, str(REPO / "examples" / "multi_worker.py"), "--iterations", "3", "--steps", "256",
            "--num-envs", "4", "--weights-out", str(tmp_path / f"worker{index}.npz"),
        ]
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for process, _ in processes:
            process.wait(timeout=300)  # the test stops by itself even if a worker hangs
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = [(tmp_path / f"worker{index}.log").read_text() for index in range(2)]
    for (process, _), log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    first, second = (np.load(tmp_path / f"worker{index}.npz") for index in range(2))
    assert len(first.files) == len(second.files) > 0
    for key in first.files:
        assert first[key].tobytes() == second[key].tobytes(), key
    # Each worker collected its own rollouts (3 x 256 steps) and made 3 updates.
    for index, log in enumerate(logs):
        assert f"worker {index}: 3 updates, 768 env steps collected here" in log
    assert "iteration    3 |" in logs[0]  # the chief reports progress
