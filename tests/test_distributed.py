"""tf.distribute correctness, each case in its own process over two logical CPU devices
(logical devices must be configured before TensorFlow starts, and a crash must fail the test
rather than the test run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_one_sgd_step_on_two_replicas_equals_one_device():
    """Loss and gradients of one step of the same global batch (with ignored pixels unevenly
    split between the replicas) equal the single-device ones, for DeepLabV3 and PointRend."""
    results = run_script("distributed_step.py")
    for name, result in results.items():
        assert result["mirrored_loss"] == pytest.approx(result["single_loss"], abs=1e-5), name
        assert result["max_update"] > 1e-3, name  # SGD at learning rate 1: update = -gradient
        assert result["max_update_difference"] < 1e-5, name


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
