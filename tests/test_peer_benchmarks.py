"""benchmarks.mobile_peer and benchmarks.compare_imported on tiny sizes (never a timing
threshold): their files, rows and reports."""

import json

import numpy as np
import pytest

from benchmarks import compare_imported, mobile_peer
from benchmarks.worker import run_in_subprocess

TINY_TIMING = ["--min-runs", "2", "--min-secs", "0", "--warmup-runs", "0"]


def test_untrained_models_get_their_batch_norms_statistics_from_the_images():
    """With the initial statistics an untrained MobileNetV2's logits are ~1e-10; the benchmark
    sets every batch norm's moving statistics (nested ones too) to the images' batch
    statistics, keeps the momentum and leaves the weights alone."""
    import keras

    inner = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((9, 9, 3)), inner, keras.layers.BatchNormalization()])
    images = np.random.default_rng(0).uniform(0, 255, (4, 9, 9, 3)).astype("float32")
    weights = [w.numpy().copy() for w in model.trainable_weights]
    mobile_peer.with_data_statistics(model, images)
    conv = inner.layers[0](images).numpy()
    norm = inner.layers[1]
    np.testing.assert_allclose(norm.moving_mean, conv.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(norm.moving_variance, conv.var(axis=(0, 1, 2)), rtol=1e-3)
    out = model(images).numpy()  # inference now normalises: unit-scale outputs
    assert 0.5 < out.std() < 2 and norm.momentum == model.layers[-1].momentum == 0.99
    for before, after in zip(weights, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.slow
def test_mobile_peer_measures_every_variant_beside_the_peer(tmp_path):
    from converters import export_tflite
    from tfdeeplab import DeepLabV3

    peer = export_tflite(DeepLabV3(21, "mobilenetv2", alpha=0.35), tmp_path / "peer.tflite",
                         input_size=(65, 65))  # fmt: skip
    out = tmp_path / "MOBILE_PEER.md"
    argv = ["--peer", str(peer), "--input-size", "65", "--out", str(out), "--rounds", "2",
            *TINY_TIMING]  # fmt: skip
    report = mobile_peer.main(argv)
    labels = [row["label"] for row in report["rows"]]
    assert labels[0].startswith("published") and len(labels) == 2 + 2 * len(mobile_peer.VARIANTS)
    assert "ours, light head, int8, uint8 in, mask out" in labels
    assert "ours, light head, int8" in labels
    # Two rounds each; the kept round is the lower middle one.
    for row in report["rows"]:
        assert len(row["round_p50_ms"]) == 2 and row["runs"]["p50_ms"] == min(row["round_p50_ms"])
    macs = {row["label"]: row["macs"] for row in report["rows"]}
    assert macs["ours, light head, fp32"] < macs["ours, standard head, fp32"]
    text = out.read_text()
    assert "| published DeepLabV3 (TensorFlow, fp32) |" in text and "| 1.00 |" in text
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["input_size"] == 65
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.slow
def test_compare_imported_exports_verifies_and_reports(tmp_path):
    from tfdeeplab.data import synthetic_scenes

    arch = "deeplabv3_mobilenet_v3_large"
    weights = compare_imported.seeded_weights(arch, tmp_path)
    scenes = synthetic_scenes(tmp_path / "scenes", 8, 65, 6, seed=0)
    job = {"arch": arch, "weights": str(weights), "threads": 2, "input_size": 65,
           "folder": str(tmp_path), "scenes": str(scenes), "calibration": 4}  # fmt: skip
    # In a fresh interpreter, as compare_imported runs it (TensorFlow's threads are set there).
    exported = run_in_subprocess("benchmarks.compare_imported:export_job", job, "export")
    assert set(exported["paths"]) == {"keras", "fp32", "int8"}
    assert exported["int8_images"] == 2 and 0 <= exported["int8_agreement"] <= 1
    assert exported["size_bytes"]["int8"] < exported["size_bytes"]["fp32"] / 3
    rows = {"torchvision eager": {"p50_ms": 10.0, "size_bytes": None, "ratio": 1.0},
            "tfdeeplab int8": {"p50_ms": 5.0, "size_bytes": 2**20, "ratio": 0.5}}  # fmt: skip
    report = {
        "machine": {"cpu": "cpu", "cpu_flags": ["avx2"]},
        "command": "python -m benchmarks.compare_imported",
        "settings": {"threads": 2, "input_size": 65},
        "wall_s": 60.0,
        "archs": {arch: {"rows": rows, "int8_agreement": 0.99, "int8_images": 2}},
    }
    text = compare_imported.markdown(report)
    assert f"| {arch} | tfdeeplab int8 | 5.0 | 0.50 | 1.0 | 99.00% (2 images) |" in text
    assert np.isfinite(exported["int8_agreement"])


def test_compare_imported_names_a_python_without_torchvision(tmp_path):
    import sys

    with pytest.raises(SystemExit, match="has no torchvision"):
        compare_imported.main(["--torch-python", sys.executable, "--out", str(tmp_path / "x.md")])


@pytest.mark.slow
def test_compare_peers_measures_a_published_tflite_at_its_own_size(tmp_path):
    from benchmarks import compare_peers
    from converters.tflite import convert_to_tflite
    from tfdeeplab import DeepLabV3

    published = tmp_path / "published.tflite"  # another project's file: no tfdeeplab metadata
    model = DeepLabV3(21, "mobilenetv2", alpha=0.35, aspp_rates=())
    published.write_bytes(convert_to_tflite(model, (1, 48, 48, 3)))
    timing = {"min_runs": 2, "min_secs": 0.0, "warmup_runs": 0}
    report = compare_peers.compare(64, timing=timing, peer_tflites=[published])
    rows = {row["name"]: row for row in report["results"]}
    row = rows["published published.tflite (TFLite fp32)"]
    assert row["input_size"] == 48 and row["input_shape"] == [1, 48, 48, 3]
    assert row["latency_ratio"] is None and row["macs"] > 0
    assert rows["tfdeeplab ResNet-50 OS8"]["latency_ratio"] is not None
    table = compare_peers.markdown_table(report)
    assert "| published published.tflite (TFLite fp32) | 48 |" in table
    assert "— (other input size)" in table
    with pytest.raises(ValueError, match=r"--peer-tflite .*: not a \.tflite file with a fixed"):
        compare_peers.compare(64, timing=timing, peer_tflites=[tmp_path])
