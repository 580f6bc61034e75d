"""tf.distribute correctness, each case in its own process over two logical CPU devices
(logical devices must be configured before TensorFlow starts, and a crash must fail the test
rather than the test run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_ports

SCRIPTS = Path(__file__).parent / "scripts"


def run_script(name, *args, timeout=600):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, (
        f"{name} {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-3000:]}"
    )
    return json.loads(result.stdout)


@pytest.mark.slow
def test_one_sgd_step_on_two_replicas_equals_one_device():
    """Loss and gradients of one step of the same global batch (with ignored pixels unevenly
    split between the replicas) equal the single-device ones, for DeepLabV3 and PointRend."""
    results = run_script("distributed_step.py")
    for name, result in results.items():
        assert result["mirrored_loss"] == pytest.approx(result["single_loss"], abs=1e-5), name
        assert result["max_update"] > 1e-3, name  # SGD at learning rate 1: update = -gradient
        assert result["max_update_difference"] < 1e-5, name


@pytest.mark.slow
def test_one_sgd_step_on_two_workers_equals_one_device():
    """The same check across two MultiWorkerMirroredStrategy processes (one CPU each, gRPC
    collectives), each worker holding half of the global batch."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPTS / "distributed_step.py"), "multiworker"],
                env=env,
                cwd=Path(__file__).parents[1],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    for stdout, _ in outputs:
        for name, result in json.loads(stdout).items():
            assert result["mirrored_loss"] == pytest.approx(result["single_loss"], abs=1e-5), name
            assert result["max_update"] > 1e-3, name
            assert result["max_update_difference"] < 1e-5, name


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["deeplabv3", "pointrend"])
def test_predict_and_evaluate_on_two_replicas_take_any_batch_size(variant):
    """A batch of 1, and a last batch of 1 in batches of 2, leave one replica empty."""
    result = run_script(
        "distributed_inference.py", *(["pointrend"] if variant == "pointrend" else [])
    )
    assert result["shapes"] == [[1, 32, 32, 3], [3, 32, 32, 3]]
    assert result["predict_difference"] < 1e-5
    assert result["one_difference"] < 1e-5
    # Batches of 2 then 1: weighting the last batch's replicas by their image counts (1 and 0)
    # instead of equally would count that batch's mean twice (a 33% error here, whatever the
    # logits).
    assert result["loss"] == pytest.approx(result["plain_loss"], rel=1e-5)
