"""Verification of an exported artifact against the Keras model it came from.

An export is only as good as its agreement with the model: every TFLite file or SavedModel is
run on real images beside the Keras model, and the report says how often their per-pixel
classes agree, the mIoU of both against the labels, the logit error, the file size and the ops.
"""

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from converters.litert import LiteRTModel
from tfdeeplab.atomic import atomic_write_bytes
from tfdeeplab.metrics import confusion_matrix, segmentation_report


class VerificationFailed(ValueError):
    """An export whose agreement with Keras is below the required minimum."""


@dataclasses.dataclass
class VerificationReport:
    """What `verify` measured. Scores are fractions in [0, 1]; None where not applicable.

    Attributes:
        artifact: the verified path; format: "tflite" or "saved_model".
        size_bytes: file (or folder) size.
        images, pixels: how much was compared: with labels, only labelled pixels (not the
            ignore label, which also marks evaluation padding) count.
        agreement: fraction of those pixels whose class (argmax) equals Keras'.
        miou_keras, miou_artifact: mIoU against the labels (None without labels).
        max_logit_error, mean_logit_error: |artifact - Keras| over logits (None when the
            artifact outputs class ids); logit_scale: max |Keras logit|, to read them against.
        ops: op name → count (TFLite nodes, or the TF op types of a SavedModel's graph).
        input: the artifact's input shape and dtype; output: "logits" or "mask".
        delegation: TFLite only: {"delegate": "XNNPACK" or None, "partitions", "nodes"} as
            LiteRT ran the file on this CPU (1 partition: XNNPACK runs the whole graph).

    TensorFlow's GPU-delegate analysis (`tf.lite.experimental.Analyzer`, gpu_compatibility=True)
    is not reported: its checks were removed in TF 2.18 (tensorflow/tensorflow#77042) and it
    calls every file compatible (tried here with CUMSUM, TOPK_V2, GATHER_ND and a 5-D
    TRANSPOSE), which would mislead.
    """

    artifact: str
    format: str
    size_bytes: int
    images: int
    pixels: int
    agreement: float
    miou_keras: float | None
    miou_artifact: float | None
    max_logit_error: float | None
    mean_logit_error: float | None
    logit_scale: float
    ops: dict
    input: dict
    output: str
    delegation: dict | None = None

    @property
    def miou_drop(self):
        """mIoU points (×100) lost by the artifact; None without labels."""
        if self.miou_keras is None or self.miou_artifact is None:
            return None
        return 100 * (self.miou_keras - self.miou_artifact)

    def to_dict(self):
        return {**dataclasses.asdict(self), "miou_drop_points": self.miou_drop}

    def require(self, min_agreement):
        """Raises `VerificationFailed` when `agreement` < `min_agreement`; returns self."""
        if min_agreement is not None and self.agreement < min_agreement:
            raise VerificationFailed(
                f"'{self.artifact}' agrees with Keras on {100 * self.agreement:.2f}% of pixels, "
                f"below min_agreement {100 * min_agreement:.2f}%"
            )
        return self

    def write_json(self, path):
        """Writes the report as JSON, atomically."""
        return atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())

    def to_markdown(self):
        def percent(value):
            return "n/a" if value is None else f"{100 * value:.2f}"

        def number(value, digits=4):
            return "n/a" if value is None else f"{value:.{digits}g}"

        rows = [
            ("artifact", f"`{self.artifact}` ({self.format}, output {self.output})"),
            ("size", f"{self.size_bytes / 2**20:.2f} MiB"),
            ("compared", f"{self.images} images, {self.pixels} labelled pixels"),
            ("argmax agreement with Keras", f"{percent(self.agreement)} %"),
            (
                "mIoU Keras / artifact",
                f"{percent(self.miou_keras)} / {percent(self.miou_artifact)}",
            ),
            (
                "logit error max / mean (scale)",
                f"{number(self.max_logit_error)} / {number(self.mean_logit_error)} "
                f"({number(self.logit_scale)})",
            ),
            ("ops", ", ".join(f"{op}×{n}" for op, n in sorted(self.ops.items()))),
        ]
        if self.delegation is not None:
            rows.append(("XNNPACK partitions", str(self.delegation["partitions"])))
        return "\n".join(
            ["| check | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
        )


class _TFLiteRunner:
    format = "tflite"

    def __init__(self, path):
        self.model = LiteRTModel(path)
        detail = self.model.input_details[0]
        self.input = {
            "shape": list(self.model.input_shape),
            "dtype": np.dtype(detail["dtype"]).name,
        }
        self.output = "mask" if len(self.model.output_details[0]["shape"]) == 3 else "logits"
        self.ops = dict(collections.Counter(self.model.op_names))

    def __call__(self, images):
        height, width = self.model.input_shape[1:3]
        if (height != -1 and images.shape[1] != height) or (
            width != -1 and images.shape[2] != width
        ):
            raise ValueError(
                f"verification images are {images.shape[1]}×{images.shape[2]} but the TFLite "
                f"model takes {height}×{width}: build the data at its input size"
            )
        # A static batch of 1 (phones) runs image by image.
        outputs = []
        for index in range(images.shape[0]):
            image = images[index : index + 1]
            outputs.append(self.model(image))
        return np.concatenate(outputs)


class _SavedModelRunner:
    format = "saved_model"

    def __init__(self, path):
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        bands = self.function.structured_input_signature[1]["images"].shape[-1]
        self.input = {"shape": [None, None, None, bands], "dtype": "float32"}
        self.output = "logits"
        self.ops = dict(collections.Counter(_forward_op_types(self.function.graph.as_graph_def())))

    def __call__(self, images):
        return self.function(images=tf.constant(images, tf.float32))["logits"].numpy()


def _forward_op_types(graph_def):
    """Op types of a graph and of the functions it calls, recursively; gradient functions in
    the library (for instance of a `tf.custom_gradient`) are not called and not counted."""
    library = {f.signature.name: f.node_def for f in graph_def.library.function}
    types, pending, seen = [], [graph_def.node], set()
    while pending:
        for node in pending.pop():
            types.append(node.op)
            for value in node.attr.values():
                name = value.func.name
                if name in library and name not in seen:
                    seen.add(name)
                    pending.append(library[name])
    return types


def _size_of(path):
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _runner(path):
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _SavedModelRunner(path)
    if path.is_file() and path.suffix == ".tflite":
        return _TFLiteRunner(path)
    raise ValueError(
        f"'{path}' is neither a .tflite file nor a SavedModel folder (with saved_model.pb)"
    )


def verify(artifact, keras_model, data, ignore_label=255, max_images=None):
    """Runs an exported artifact and the Keras model on the same images and compares them.

    Args:
        artifact: a `.tflite` file or a SavedModel folder.
        keras_model: the Keras 3 model it was exported from.
        data: a tf.data.Dataset or iterable of image batches (B, H, W, 3) in [0, 255], or of
            (images, masks) pairs (then mIoU is measured too), at the artifact's input size.
        ignore_label: mask value left out of the agreement and the mIoU.
        max_images: stop after this many images.

    Returns:
        A `VerificationReport`.
    """
    runner = _runner(artifact)
    tally = _Tally(ignore_label)
    for images, masks in _limited(data, max_images):
        expected = np.asarray(keras_model(images, training=False), np.float32)
        tally.add(expected, runner(images), masks, runner.output)
    if tally.images == 0:
        raise ValueError("verify: data yielded no images")
    if tally.pixels == 0:
        raise ValueError(f"verify: every pixel of the data is the ignore label {ignore_label}")
    logits = runner.output == "logits"
    confusions = tally.confusions
    return VerificationReport(
        artifact=str(artifact),
        format=runner.format,
        size_bytes=_size_of(artifact),
        images=tally.images,
        pixels=tally.pixels,
        agreement=tally.agree / tally.pixels,
        miou_keras=None if confusions is None else _miou(confusions[0]),
        miou_artifact=None if confusions is None else _miou(confusions[1]),
        max_logit_error=tally.max_error if logits else None,
        mean_logit_error=tally.error_sum / (tally.pixels * tally.channels) if logits else None,
        logit_scale=tally.scale,
        ops=runner.ops,
        input=runner.input,
        output=runner.output,
        delegation=runner.model.delegation() if runner.format == "tflite" else None,
    )


def _limited(data, max_images):
    """(images float32 (B, H, W, 3), masks (B, H, W) or None) batches, `max_images` in all."""
    seen = 0
    for batch in data:
        images, masks = (batch[0], batch[1]) if isinstance(batch, tuple | list) else (batch, None)
        images = np.asarray(images, np.float32)
        masks = None if masks is None else np.asarray(masks)
        if max_images is not None:
            images = images[: max_images - seen]
            masks = None if masks is None else masks[: len(images)]
        if len(images) == 0:
            return
        seen += len(images)
        yield images, masks


def _miou(confusion):
    names = [str(i) for i in range(len(confusion))]
    boundaries = np.zeros((len(confusion), 4), np.int64)
    return segmentation_report(confusion, boundaries, names)["mean_iou"]


@dataclasses.dataclass
class _Tally:
    """The running counts of one verification."""

    ignore_label: int
    agree: int = 0
    pixels: int = 0
    images: int = 0
    channels: int = 0
    max_error: float = 0.0
    error_sum: float = 0.0
    scale: float = 0.0
    confusions: np.ndarray | None = None  # (2, K, K): Keras, artifact

    def add(self, expected, actual, masks, output):
        """One batch: Keras' logits `expected`, the artifact's logits or mask `actual`."""
        expected_classes = expected.argmax(-1)
        actual_classes = actual.astype(np.int64) if output == "mask" else actual.argmax(-1)
        # With labels, only labelled pixels count: padding and ignored pixels (where both models
        # trivially agree on the padding colour) would inflate the agreement.
        counted = np.ones(expected_classes.shape, bool)
        if masks is not None:
            counted = masks != self.ignore_label
        self.agree += int(np.sum((actual_classes == expected_classes) & counted))
        self.pixels += int(counted.sum())
        self.images += len(expected)
        self.channels = expected.shape[-1]
        self.scale = max(self.scale, float(np.max(np.abs(expected))))
        if output == "logits":
            difference = np.abs(actual - expected)
            self.max_error = max(self.max_error, float(difference.max()))
            self.error_sum += float(difference.sum())
        if masks is not None:
            pair = np.stack(
                [
                    confusion_matrix(masks, expected_classes, self.channels, self.ignore_label),
                    confusion_matrix(masks, actual_classes, self.channels, self.ignore_label),
                ]
            )
            self.confusions = pair if self.confusions is None else self.confusions + pair
