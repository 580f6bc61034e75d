"""converters.export_tflite and verify in every quantization mode, run in LiteRT."""

import os

import numpy as np
import pytest
import tensorflow as tf

import converters
from converters import LiteRTModel, Quantization, export_tflite, verify
from tests.helpers import (
    assert_clean_graph,
    cell_images,
    images,
    relative_error,
)

SIZE = 64
TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 16}


@pytest.fixture(scope="module")
def model(trained_tiny):
    return trained_tiny


@pytest.fixture(scope="module")
def data():
    # Models take RGB in [0, 255]; an integer (byte) input cannot hold the noise beyond it.
    x, y = cell_images(6, SIZE, seed=0)
    return tf.data.Dataset.from_tensor_slices((np.clip(x, 0, 255), y)).batch(2)


@pytest.fixture(scope="module")
def fp32_size(model, tmp_path_factory):
    path = export_tflite(model, tmp_path_factory.mktemp("fp32") / "m.tflite", input_size=SIZE)
    return path.stat().st_size


def test_fp32_matches_keras_within_1e4_of_the_logit_scale(model, tmp_path):
    path = export_tflite(model, tmp_path / "fp32.tflite", "none", input_size=(SIZE, SIZE))
    x = images(1, SIZE, SIZE, seed=7)
    litert = LiteRTModel(path)
    assert litert.input_shape == (1, SIZE, SIZE, 3)
    assert relative_error(litert(x), model.predict(x, verbose=0)) <= 1e-4
    assert_clean_graph(litert.op_names)


@pytest.mark.parametrize("mode", ["float16", "dynamic"])
def test_float16_and_dynamic_agree_on_99_percent_of_pixels(model, data, fp32_size, mode, tmp_path):
    path = export_tflite(model, tmp_path / f"{mode}.tflite", mode, input_size=SIZE)
    report = verify(path, model, data)
    assert report.agreement >= 0.99 and report.images == 6
    assert report.size_bytes < 0.6 * fp32_size  # measured: 0.52 (float16), 0.29 (dynamic)
    assert_clean_graph(report.ops)


@pytest.mark.parametrize("io_type", ["float32", "uint8"])
def test_int8_is_under_half_of_fp32_keeping_classes(model, data, fp32_size, io_type, tmp_path):
    path = export_tflite(
        model,
        tmp_path / "int8.tflite",
        "int8",
        input_size=SIZE,
        representative_data=data,
        calibration_steps=6,
        io_type=io_type,
    )
    report = verify(path, model, data)
    # Measured 0.42: this tiny net (0.3 M weights) carries per-channel scales and int64 zero
    # points (12 bytes a channel) and int32 biases, large next to its 1-byte weights.
    assert report.size_bytes < fp32_size / 2.2
    assert report.input == {"shape": [1, SIZE, SIZE, 3], "dtype": io_type}
    assert report.agreement >= 0.95  # measured: 0.97-0.98 on this tiny, briefly trained net
    assert abs(report.miou_drop) <= 3
    assert report.delegation["delegate"] == "XNNPACK" and report.delegation["partitions"] == 1
    assert "| XNNPACK partitions | 1 |" in report.to_markdown()
    assert "CONV_2D" in report.ops and "QUANTIZE" in report.ops
    assert_clean_graph(report.ops)


def test_dynamic_size_files_match_keras_at_three_sizes(model, data, tmp_path):
    """input_size="dynamic": one file for any H × W (servers), builtin ops only."""
    fp32 = LiteRTModel(export_tflite(model, tmp_path / "fp32.tflite", input_size="dynamic"))
    int8_path = export_tflite(model, tmp_path / "int8.tflite", "int8", "dynamic", data, 6)
    int8 = LiteRTModel(int8_path)
    assert fp32.input_shape == (1, None, None, 3) or -1 in fp32.input_shape
    scenes = np.clip(cell_images(1, 97, seed=5)[0], 0, 255)  # what it was trained on
    for height, width in ((48, 64), (64, 64), (97, 81)):
        x = scenes[:, :height, :width]
        expected = model.predict(x, verbose=0)
        assert relative_error(fp32(x), expected) <= 1e-4
        agreement = (int8(x).argmax(-1) == expected.argmax(-1)).mean()
        assert agreement >= 0.9, (height, width, agreement)  # static 64² files: 0.97-0.98
    assert_clean_graph(fp32.op_names)
    assert_clean_graph(int8.op_names)
    with pytest.raises(ValueError, match="fine-tunes at a static input_size"):
        export_tflite(model, tmp_path / "q.tflite", "qat", "dynamic", data)


def test_mask_output_puts_the_argmax_in_the_graph(model, data, tmp_path):
    path = export_tflite(
        model, tmp_path / "mask.tflite", "int8", SIZE, data, 6, output="mask", io_type="uint8"
    )
    litert = LiteRTModel(path)
    mask = litert(images(1, SIZE, SIZE))
    assert mask.dtype == np.uint8 and mask.shape == (1, SIZE, SIZE)
    assert {"ARG_MAX", "CAST"} <= set(litert.op_names)
    report = verify(path, model, data)
    assert report.output == "mask" and report.max_logit_error is None
    assert report.agreement >= 0.95


def test_verify_counts_agreement_and_miou_against_labels(model, tmp_path):
    x = images(2, SIZE, SIZE)
    # The call verify makes: `predict` runs other kernels, whose argmax can differ at a tie,
    # and a label the model then gets right makes both mIoUs nonzero (seen: 4e-5).
    keras_classes = np.asarray(model(x, training=False)).argmax(-1)
    wrong = (keras_classes + 1) % 3  # labels the model never gets right
    path = export_tflite(model, tmp_path / "m.tflite", input_size=SIZE)
    report = verify(path, model, [(x, wrong), x], max_images=3)
    assert report.images == 3 and report.pixels == 3 * SIZE * SIZE
    assert report.agreement == 1.0 and report.miou_keras == report.miou_artifact == 0.0
    assert report.max_logit_error <= 1e-4 * max(report.logit_scale, 1)
    with pytest.raises(converters.VerificationFailed, match=r"below min_agreement 100\.10%"):
        report.require(1.001)
    with pytest.raises(ValueError, match="are 32×32 but the TFLite model takes 64×64"):
        verify(path, model, [images(1, 32, 32)])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"quantization": "int4"}, "quantization='int4' is unknown; choose one of: none, float16"),
        ({"output": "probabilities"}, "output='probabilities' is unknown; choose one of: logits"),
        ({"io_type": "int16"}, "io_type='int16' is unknown; choose one of: float32, uint8, int8"),
        ({"quantization": "int8"}, "pass representative_data"),
        ({"quantization": "qat"}, "fine-tunes on labelled data"),
        ({"io_type": "uint8"}, "io_type='uint8' needs an integer model"),
        ({"input_size": (64, 0)}, r"input_size=\(64, 0\) must be"),
    ],
)
def test_unknown_or_incomplete_options_are_refused(model, arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_tflite(model, tmp_path / "m.tflite", **{"input_size": SIZE, **arguments})
    assert not list(tmp_path.iterdir())


def test_existing_files_are_kept_and_failed_writes_leave_nothing(model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(FileExistsError, match=r"m\.tflite' exists; pass overwrite=True"):
        export_tflite(model, path, input_size=SIZE)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # the write is cut before the rename
    with pytest.raises(KeyboardInterrupt):
        export_tflite(model, path, input_size=SIZE, overwrite=True)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.tflite"]
    monkeypatch.undo()
    export_tflite(model, path, input_size=SIZE, overwrite=True)
    assert LiteRTModel(path).input_shape == (1, SIZE, SIZE, 3)


def test_quantization_enum_accepts_members_and_values():
    assert Quantization.parse("int8", "q") is Quantization.INT8
    assert Quantization.parse(Quantization.QAT, "q").integer
    assert not Quantization.parse("dynamic", "q").integer


def test_uint8_input_is_raw_bytes_whatever_the_calibration_range(model, tmp_path):
    """Calibrated on images in [20, 230], the uint8 input still has scale 1 and zero point 0
    (int8: -128), so a phone feeds camera bytes as they are."""
    x, _ = cell_images(4, SIZE, seed=0)  # images the tiny model was trained on
    raw = np.round(np.clip(x, 0, 255) * (210 / 255) + 20)  # bytes in [20, 230]
    narrow = [image[None] for image in raw]
    expected = model.predict(raw, verbose=0).argmax(-1)
    for io_type, zero_point in (("uint8", 0), ("int8", -128)):
        path = export_tflite(
            model, tmp_path / f"{io_type}.tflite", "int8", SIZE, narrow, 4, io_type=io_type
        )
        litert = LiteRTModel(path)
        detail = litert.input_details[0]
        assert detail["quantization"] == (1.0, zero_point)
        litert(raw[:1])  # allocates the tensors
        interpreter = litert.interpreter
        agree = []
        for image, classes in zip(raw, expected, strict=True):
            interpreter.set_tensor(detail["index"], (image[None] + zero_point).astype(io_type))
            interpreter.invoke()
            agree.append(np.mean(litert.output().argmax(-1)[0] == classes))
        # Measured 0.929-0.95 over three runs (the tiny model trains non-bit-reproducibly on CPU
        # threads); a scale other than 1 would misread every byte and land far lower.
        assert np.mean(agree) >= 0.9


def test_verify_counts_only_labelled_pixels(model, tmp_path):
    """Padding (the ignore label) is where both models trivially agree: it must not count."""
    x = images(1, SIZE, SIZE)
    path = export_tflite(model, tmp_path / "m.tflite", input_size=SIZE)
    labels = model.predict(x, verbose=0).argmax(-1)
    labels[:, :, SIZE // 2 :] = 255  # the right half is padding

    def disagrees_on_the_left(batch, training=False):
        logits = np.array(model(batch, training=training))
        logits[:, :, : SIZE // 2] = np.roll(logits[:, :, : SIZE // 2], 1, axis=-1)
        return logits

    report = verify(path, disagrees_on_the_left, [(x, labels)])
    assert report.pixels == SIZE * SIZE // 2
    assert report.agreement == 0.0


def test_export_command_threads_the_ignore_label_everywhere(monkeypatch, tmp_path):
    from converters import calibration, metadata
    from tfdeeplab import cli, commands

    seen = {}

    def calibration_dataset(root, size, **kwargs):
        seen.setdefault("calibration", []).append(kwargs["ignore_label"])
        return [(images(1, SIZE, SIZE), np.zeros((1, SIZE, SIZE), np.int32))]

    def verify_stub(artifact, model, data, ignore_label=255, max_images=None):
        seen["verify"] = ignore_label
        raise ValueError("stop after verification")

    def export_stub(model, path, *args, qat=None, metadata=None, **kwargs):
        seen["qat"] = qat.ignore_label
        seen["metadata"] = metadata["ignore_label"]
        path.write_bytes(b"tflite")

    def describe_stub(model, model_path, data, ignore_label):
        return {"ignore_label": ignore_label}

    monkeypatch.setattr(calibration, "calibration_dataset", calibration_dataset)
    monkeypatch.setattr(converters, "verify", verify_stub)
    monkeypatch.setattr(converters, "export_tflite", export_stub)
    monkeypatch.setattr(commands, "_load_model", lambda path: None)
    monkeypatch.setattr(metadata, "describe_run", describe_stub)
    argv = ["export", "--model", "m.keras", "--format", "tflite", "--input-size", str(SIZE)]
    argv += ["--calibration-data", str(tmp_path), "--out"]
    argv += [str(tmp_path / "m.tflite"), "--quantization", "qat", "--ignore-label", "7"]
    assert cli.main(argv) == 2
    assert seen == {"calibration": [7, 7], "verify": 7, "qat": 7, "metadata": 7}
