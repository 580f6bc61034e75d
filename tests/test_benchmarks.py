"""The benchmark harness on a tiny model: JSON fields, MAC counts, errors. No timing assertions."""

import json

import keras
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks import artifacts as artifact_measure
from benchmarks import latency
from benchmarks.flops import graph_macs, tflite_macs
from benchmarks.stats import time_runs
from converters import LiteRTModel, convert_to_tflite, export_saved_model, export_tflite
from tests.helpers import images
from tfdeeplab import DeepLabV3
from tfdeeplab.cli import main as cli_main
from tfdeeplab.layers import AtrousConv2D, AtrousDepthwiseConv2D

SIZE = 32


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifacts")
    model = DeepLabV3(3, backbone="mobilenetv2", output_stride=16, alpha=0.35, aspp_filters=16)
    model.save(folder / "model.keras")
    export_saved_model(model, folder / "saved_model")
    export_tflite(model, folder / "fp32.tflite", input_size=(SIZE, SIZE))
    export_tflite(
        model,
        folder / "int8.tflite",
        quantization="int8",
        input_size=(SIZE, SIZE),
        representative_data=lambda: (images(1, SIZE, SIZE, seed=i) for i in range(2)),
        calibration_steps=2,
    )
    return folder


def test_time_runs_follows_benchmark_model_phases():
    calls = []
    result = time_runs(lambda: calls.append(1), warmup_runs=2, min_runs=3, min_secs=0.0)
    assert len(calls) == 1 + 2 + 3  # first inference, warm-up, timed phase
    runs = result["runs"]
    assert runs["count"] == 3 and result["first_ms"] >= 0 and result["warmup_mean_ms"] >= 0
    assert runs["min_ms"] <= runs["p50_ms"] <= runs["p90_ms"] <= runs["p95_ms"] <= runs["max_ms"]


def test_macs_count_the_nominal_dilated_convolution():
    """One count for a TF graph and a TFLite file; dilation through space-to-batch is counted
    on the unpadded map, as the single dilated kernel does it."""
    inputs = keras.Input((None, None, 4))
    x = AtrousConv2D(8, 3, padding="same", dilation_rate=6)(inputs)  # space-to-batch in TF
    x = AtrousDepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, x)
    pixels = 20 * 20
    expected = pixels * (8 * 3 * 3 * 4) + pixels * (8 * 3 * 3) + pixels * (5 * 8)
    spec = tf.TensorSpec((1, 20, 20, 4))
    assert graph_macs(tf.function(model).get_concrete_function(spec)) == expected
    litert = LiteRTModel(convert_to_tflite(model, (1, None, None, 4)))
    assert tflite_macs(litert, (1, 20, 20, 4)) == expected


def test_harness_writes_every_field_for_every_artifact(artifacts, tmp_path, capsys):
    paths = [artifacts / name for name in ("model.keras", "saved_model", "fp32.tflite")]
    paths.append(artifacts / "int8.tflite")
    out = tmp_path / "latency.json"
    argv = [*map(str, paths), "--input-size", str(SIZE), "--min-runs", "3", "--min-secs", "0"]
    argv += ["--warmup-runs", "1", "--threads", "1", "--matmul-size", "256"]
    latency.main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out

    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["matmul_peak_gflops"] == max(report["matmul_gflops"].values()) > 0
    assert report["matmul_int8_peak_gops"] > 0
    assert report["settings"] == {
        "input_size": [SIZE, SIZE],
        "batch": 1,
        "threads": 1,
        "timing": {"warmup_runs": 1, "min_runs": 3, "min_secs": 0.0, "max_secs": 150.0},
        "onednn": False,
        "matmul_size": 256,
        "rounds": 1,
    }
    rows = {row["label"]: row for row in report["results"]}
    assert list(rows) == [f"{artifacts.name}/{path.name}" for path in paths]
    for row in rows.values():
        runs = row["runs"]
        assert runs["count"] >= 3
        assert runs["min_ms"] <= runs["p50_ms"] <= runs["p95_ms"] <= runs["p99_ms"]
        assert runs["p99_ms"] <= runs["max_ms"]
        assert row["init_ms"] > 0 and row["first_ms"] > 0 and row["warmup_mean_ms"] > 0
        assert row["peak_rss_mib"] > 0 and row["size_bytes"] > 0
        assert row["input_shape"] == [1, SIZE, SIZE, 3] and row["threads"] == 1
        assert row["onednn"] is False and row["round_p50_ms"] == [runs["p50_ms"]]
        assert row["gflops_per_s"] == pytest.approx(2 * row["macs"] / runs["p50_ms"] / 1e6)
        peak = {"int8": report["matmul_int8_peak_gops"], "float": report["matmul_peak_gflops"]}
        assert row["peak_kind"] == ("int8" if row["precision"] in ("int8", "dynamic") else "float")
        assert row["fraction_of_peak"] == pytest.approx(
            row["gflops_per_s"] / peak[row["peak_kind"]]
        )
        assert row["label"] in printed
    # Every format holds the same network: the same multiply-adds.
    assert len({row["macs"] for row in rows.values()}) == 1
    keras_row, saved, fp32, int8 = rows.values()
    assert (keras_row["kind"], saved["kind"], fp32["kind"]) == ("keras", "saved_model", "tflite")
    assert (fp32["precision"], int8["precision"]) == ("fp32", "int8")
    assert int8["size_bytes"] < fp32["size_bytes"] / 2.2  # 0.40 here: see test_converters
    for row in (fp32, int8):
        assert row["delegate"] == "XNNPACK" and row["partitions"] >= 1
        assert row["ops"]["CONV_2D"] >= 1 and "SPACE_TO_BATCH_ND" not in row["ops"]
        assert row["nodes"] == sum(row["ops"].values())
    chart = Image.open(out.with_suffix(".png"))
    assert chart.format == "PNG" and chart.size[0] >= 640


def test_markdown_table_has_a_row_per_artifact(artifacts, capsys):
    # No --input-size: each fixed-size file runs at the size its metadata gives.
    argv = [str(artifacts / "fp32.tflite"), str(artifacts / "int8.tflite")]
    argv += ["--min-runs", "3", "--matmul-size", "256"]
    cli_main(["benchmark", *argv, "--markdown"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 and f"| TFLite int8 | {SIZE}×{SIZE} |" in table[-1]


def test_an_artifacts_own_size_comes_from_its_metadata_or_its_input(artifacts, tmp_path):
    from converters.tflite import convert_to_tflite

    assert latency.artifact_input_size(artifacts / "fp32.tflite") == (SIZE, SIZE)
    bare = tmp_path / "bare.tflite"  # no tfdeeplab metadata: the input tensor says
    model = DeepLabV3(3, backbone="mobilenetv2", alpha=0.35, aspp_filters=16)
    bare.write_bytes(convert_to_tflite(model, (1, 24, 40, 3)))
    assert latency.artifact_input_size(bare) == (24, 40)
    dynamic = tmp_path / "dynamic.tflite"
    export_tflite(model, dynamic, input_size="dynamic")
    assert latency.artifact_input_size(dynamic) is None
    assert latency.artifact_input_size(artifacts / "saved_model") is None


def test_bad_artifacts_are_named_before_anything_runs(artifacts, tmp_path):
    missing = tmp_path / "missing.tflite"
    with pytest.raises(SystemExit, match=r"missing\.tflite: does not exist"):
        latency.main([str(artifacts / "fp32.tflite"), str(missing)])
    with pytest.raises(SystemExit, match="--rounds must be at least 1"):
        latency.main([str(artifacts / "fp32.tflite"), "--rounds", "0"])
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.h5: is not one"):
        artifact_measure.artifact_kind(tmp_path / "weights.h5")


def test_fixed_size_tflite_names_its_own_size(artifacts):
    with pytest.raises(ValueError, match=r"fp32.tflite: the file takes input \(1, 32, 32, 3\)"):
        artifact_measure.measure(artifacts / "fp32.tflite", (64, 64), timing={"min_runs": 1})


@pytest.mark.slow
def test_rasters_benchmark_reports_quality_memory_speed_and_seams(tmp_path):
    """`benchmarks.rasters` at a tiny size: every section filled, from subprocess runs."""
    pytest.importorskip("rasterio")
    from benchmarks.rasters import main

    out = tmp_path / "RASTERS.md"
    report = main(["--sizes", "150", "300", "--tile", "64", "--overlap", "8", "--num-images",
                   "8", "--minutes", "0.05", "--seam-size", "128", "--work",
                   str(tmp_path / "work"), "--out", str(out)])  # fmt: skip
    assert set(report["quality"]) == {"3", "4"} and set(report["memory"]) == {"150", "300"}
    assert all(row["peak_rss_mb"] > 100 for row in report["memory"].values())
    assert set(report["speed"]) == {"keras", "tflite_fp32", "tflite_int8"}
    assert all(row["windows"] == 9 for row in report["speed"].values())  # 3 × 3 on 150²
    assert set(report["seams"]) == {"overlap_8", "overlap_0"}
    assert out.with_suffix(".png").is_file() and "Seams" in out.read_text()


@pytest.mark.slow
def test_qat_benchmark_scores_fp32_ptq_and_qat_and_keeps_results(trained_tiny, tmp_path):
    """`benchmarks.qat_camvid` on synthetic scenes: one PTQ and one QAT row per learning rate,
    the per-layer table, the chart; a second run reuses the kept result."""
    from benchmarks.qat_camvid import main
    from tfdeeplab.data import synthetic_scenes

    scenes = synthetic_scenes(tmp_path / "scenes", 12, 64, num_classes=3, seed=0)
    path = tmp_path / "tiny.keras"
    trained_tiny.save(path)
    argv = ["--data", str(scenes), "--model", f"tiny={path}", "--input-size", "65,97",
            "--calibration-steps", "4", "--qat-epochs", "1", "--qat-steps", "2",
            "--qat-batch-size", "2", "--qat-lr", "1e-5,1e-4", "--debug-images", "2",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "QAT.md")]  # fmt: skip
    report = main(argv)
    (row,) = report["rows"]
    assert [qat["lr"] for qat in row["qat"]] == [1e-5, 1e-4]
    assert all(0 <= r["miou"] <= 1 for r in (row["ptq"], *row["qat"]))
    assert row["layers"] and all("sqnr_db" in layer for layer in row["layers"])
    assert (tmp_path / "QAT.png").is_file() and "SQNR" in (tmp_path / "QAT.md").read_text()
    again = main(argv)
    assert again["rows"] == report["rows"]
