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


@pytest.mark.parametrize("kind", ["discrete", "box", "dict"])
def test_mirrored_update_over_two_replicas_equals_the_single_device_update(kind, tmp_path):
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "distributed_update.py"), kind, str(out)],
        check=True, timeout=600, capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["replicas"] == 2
    # One update on a batch split over 2 replicas: every weight (policy, critic, normalizer
    # statistics, counters) within 1e-5 of the single-device run on the whole batch.
    # The dict/CNN case (~40k policy weights) goes through conjugate gradient with float32 sums taken
    # in another order (two halves, then the mean): 8e-5 against moves of 7e-2 was measured.
    worst = max(result["differences"].values())
    assert worst <= (1e-5 if kind != "dict" else 2e-4), result["differences"]
    # ...and the comparison is not vacuous: the update moved the policy and the critic.
    assert max(v for k, v in result["moved"].items() if "policy_output" in k) > 1e-3
    assert max(v for k, v in result["moved"].items() if "value_output" in k) > 1e-3
    for key in ("kl", "surrogate_improvement", "value_loss", "explained_variance", "entropy"):
        np.testing.assert_allclose(result["mirrored_history"][key], result["single_history"][key],
                                   rtol=1e-4 if kind != "dict" else 1e-3, atol=1e-6)
    assert result["mirrored_history"]["step_accepted"] == [1.0]
    # A real fit on CartPole rollouts under the strategy: one collection per update, on-policy
    # (train_step refuses a batch from other weights), replicas' copies identical.
    assert result["collected"] == 3 * 256 and result["policy_version"] == 3
    assert result["fit_history"]["step_accepted"] == [1.0, 1.0, 1.0]
    assert result["replica_weights_equal"]
    assert result["export_matches"]  # the SavedModel serves the strategy-trained policy
    assert "a batch of 255 steps does not split evenly over this worker's 2 replicas" in result["uneven_error"]


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
