"""fp32, post-training int8 (PTQ) and quantization-aware int8 (QAT) of the same trained models,
scored on real photos.

    python -m benchmarks.qat_camvid --data ../shared/data/camvid \\
        --model "MobileNetV2 light head=runs/qat/mnv2_light/final.keras" \\
        --model "ResNet-50=runs/qat/resnet50/final.keras" --input-size 385,481

For every model: the PTQ file (`converters.export_tflite(..., "int8")`, calibrated on the
train split) and one QAT file per `--qat-lr` (`export_tflite(..., "qat")`: TFMOT fine-tuning
through the tf_keras bridge, then conversion), each verified by `converters.verify` on the val
split beside the Keras model (fp32: the Keras model's mIoU on the same images). The input
size holds CamVid's 480×360 photos at their own resolution (padded, never resized).

Where int8 loses, the per-layer table says where: TensorFlow's
`tf.lite.experimental.QuantizationDebugger` runs the PTQ file's ops one by one on float inputs
and reports each op's own output error; the table lists the ops with the largest RMSE in units
of their quantization step (0.29 is pure rounding of a well-used range).

Writes `--out` (Markdown), its JSON and a chart of the mIoUs.
"""

import argparse
import csv
import io
import itertools
import shlex
import sys
import time
from pathlib import Path

from benchmarks.stats import generated_by, machine, write_report

WORST_LAYERS = 8


def _size(text):
    height, width = (int(v) for v in text.split(","))
    return height, width


def _model_argument(text):
    label, separator, path = text.rpartition("=")
    if not separator or not label:
        raise argparse.ArgumentTypeError(f"--model {text!r}: expected LABEL=PATH")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--model {text!r}: no such file {path}")
    return label, path


def _verified(path, model, data, seconds):
    """The verification report's figures that the table shows."""
    from converters import verify

    report = verify(path, model, data.split("val", shuffle=False))
    return {
        "file": str(path),
        "miou_keras": report.miou_keras,
        "miou": report.miou_artifact,
        "agreement": report.agreement,
        "images": report.images,
        "size_bytes": report.size_bytes,
        "export_s": seconds,
    }


def _sqnr_db(float_values, quantized_values, scale, zero_point):
    """Signal-to-quantization-noise ratio of one op's output, in dB (QuantizationDebugger's
    layer_direct_compare_metrics signature)."""
    import numpy as np

    signal = np.concatenate([np.ravel(v) for v in float_values]).astype(np.float64)
    quantized = np.concatenate([np.ravel(v) for v in quantized_values]).astype(np.float64)
    noise = signal - (quantized - zero_point) * scale
    power = np.mean(signal**2)
    if power == 0:
        return float("nan")  # an all-zero output (e.g. a dead ReLU): no signal to compare
    return float(10 * np.log10(power / max(np.mean(noise**2), 1e-30)))


def layer_errors(model, data, size, calibration_steps, images):
    """Each op's own int8 error in the PTQ file (QuantizationDebugger: the op run on the same
    dequantized inputs in float and in int8), worst signal-to-noise ratio first."""
    import tensorflow as tf

    from converters import tflite_converter

    converter = tflite_converter(
        model, (1, *size, model.input_shape[-1]), "int8", data.split("train"), calibration_steps
    )
    val = data.split("val", shuffle=False)

    def debug_images():
        for batch, _ in itertools.islice(val, images):
            yield [tf.cast(batch, tf.float32)]

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=debug_images,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"sqnr_db": _sqnr_db}
        ),
    )
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        if scale <= 0:
            continue
        rows.append(
            {
                "op": row["op_name"],
                "tensor": row["tensor_name"].split(";")[0],
                "sqnr_db": float(row["sqnr_db"]),
                "rmse_per_step": float(row["mean_squared_error"]) ** 0.5 / scale,
                "max_error_per_step": float(row["max_abs_error"]) / scale,
                "range": 255 * scale,
            }
        )
    return sorted(rows, key=lambda r: (r["sqnr_db"] != r["sqnr_db"], r["sqnr_db"]))


def measure_model(label, path, args, work):
    """PTQ and QAT files of one model, verified, and its per-layer PTQ errors."""
    import keras

    from converters import ExportData, QATOptions, export_tflite

    model = keras.saving.load_model(path)
    data = ExportData(args.data, args.input_size, args.seed, args.val_fraction)
    stem = work / label.replace(" ", "_").replace("/", "_")
    start = time.perf_counter()
    calibration = data.split("train")
    ptq_path = export_tflite(model, f"{stem}_ptq.tflite", "int8", args.input_size, calibration,
                             args.calibration_steps, overwrite=True)  # fmt: skip
    result = {"label": label, "model": path}
    result["ptq"] = _verified(ptq_path, model, data, time.perf_counter() - start)
    print(f"{label}: PTQ int8 mIoU {100 * result['ptq']['miou']:.2f}", flush=True)
    result["qat"] = []
    for lr in args.qat_lr:
        options = QATOptions(args.qat_epochs, args.qat_steps, lr)
        start = time.perf_counter()
        fine_tuning = data.split("train", augment=True, batch_size=args.qat_batch_size)
        qat_path = export_tflite(model, f"{stem}_qat_{lr:g}.tflite", "qat", args.input_size,
                                 fine_tuning, args.calibration_steps, qat=options,
                                 overwrite=True)  # fmt: skip
        verified = _verified(qat_path, model, data, time.perf_counter() - start)
        result["qat"].append({"lr": lr, **verified})
        print(f"{label}: QAT int8 (lr {lr:g}) mIoU {100 * verified['miou']:.2f}", flush=True)
    result["fp32_miou"] = result["ptq"]["miou_keras"]
    if args.debug_images:
        errors = layer_errors(model, data, args.input_size, args.calibration_steps,
                              args.debug_images)  # fmt: skip
        result["layers"] = errors[:WORST_LAYERS]
        scored = [e["sqnr_db"] for e in errors if e["sqnr_db"] == e["sqnr_db"]]
        result["layers_median_sqnr_db"] = sorted(scored)[len(scored) // 2] if scored else None
    return result


def _decibels(value):
    return "n/a" if value is None else f"{value:.1f} dB"


def _measured_or_kept(label, path, args, work):
    """`measure_model`'s result, kept in `work` as JSON: a later run with the same settings
    reuses it (a model measured once is not fine-tuned again when another model is added or
    the run was stopped), unless `--fresh`."""
    import json

    from tfdeeplab.atomic import atomic_write_bytes

    settings = {k: v for k, v in vars(args).items() if k not in ("out", "model", "fresh")}
    settings["input_size"] = list(settings["input_size"])
    kept = work / (label.replace(" ", "_").replace("/", "_") + ".json")
    if kept.is_file() and not args.fresh:
        saved = json.loads(kept.read_text())
        if saved["settings"] == settings and saved["result"]["model"] == path:
            print(f"{label}: kept from {kept}", flush=True)
            return saved["result"]
    result = measure_model(label, path, args, work)
    atomic_write_bytes(kept, json.dumps({"settings": settings, "result": result}).encode())
    return result


def _points(value):
    return f"{100 * value:.2f}"


def markdown(report):
    settings = report["settings"]
    lines = [
        "# fp32, PTQ int8 and QAT int8 on CamVid",
        "",
        f"{generated_by(report)}, in {report['wall_s'] / 60:.0f} min. Input "
        f"{settings['input_size'][0]}×{settings['input_size'][1]} (CamVid's photos at their "
        f"own resolution, padded); {report['rows'][0]['ptq']['images']} val images; "
        f"calibration {settings['calibration_steps']} train images; QAT "
        f"{settings['qat_epochs']} × {settings['qat_steps']} steps of batch "
        f"{settings['qat_batch_size']}, Adam, BN frozen. mIoU in %, drops in points.",
        "",
        "| model | fp32 mIoU | PTQ int8 mIoU (drop) | PTQ agreement | QAT lr | QAT int8 mIoU "
        "(drop) | QAT agreement | QAT − PTQ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        fp32, ptq = row["fp32_miou"], row["ptq"]
        for qat in row["qat"]:
            lines.append(
                f"| {row['label']} | {_points(fp32)} | {_points(ptq['miou'])} "
                f"({_points(fp32 - ptq['miou'])}) | {_points(ptq['agreement'])} | {qat['lr']:g} "
                f"| {_points(qat['miou'])} ({_points(fp32 - qat['miou'])}) "
                f"| {_points(qat['agreement'])} | {_points(qat['miou'] - ptq['miou'])} |"
            )
    for row in report["rows"]:
        if "layers" in row:
            lines += _layer_table(row, settings["debug_images"])
    return "\n".join(lines) + "\n"


def _layer_table(row, images):
    lines = [
        "",
        f"## {row['label']}: the PTQ file's ops with the largest own error",
        "",
        f"QuantizationDebugger on {images} val images: each op's output from the same "
        "dequantized inputs in float and in int8. SQNR: the float output's power over the "
        f"error's, in dB (median over all ops {_decibels(row['layers_median_sqnr_db'])}; 8 bits "
        "over a well-used range give about 40); RMSE and max error in quantization steps.",
        "",
        "| op | tensor | SQNR dB | RMSE (steps) | max error (steps) | int8 range |",
        "|---|---|---|---|---|---|",
    ]
    for layer in row["layers"]:
        lines.append(
            f"| {layer['op']} | `{layer['tensor'][-60:]}` | {layer['sqnr_db']:.1f} "
            f"| {layer['rmse_per_step']:.2f} | {layer['max_error_per_step']:.1f} "
            f"| {layer['range']:.3g} |"
        )
    return lines


def write_chart(report, path):
    from tfdeeplab.plots import class_iou_bars

    labels = [row["label"] for row in report["rows"]]
    series = {
        "fp32 (Keras)": [row["fp32_miou"] for row in report["rows"]],
        "PTQ int8": [row["ptq"]["miou"] for row in report["rows"]],
        "QAT int8 (best lr)": [max(q["miou"] for q in row["qat"]) for row in report["rows"]],
    }
    class_iou_bars(path, labels, series, title="CamVid val mIoU: fp32, PTQ and QAT int8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="segmentation folder (CamVid)")
    parser.add_argument("--model", type=_model_argument, action="append", required=True,
                        help="LABEL=PATH of a trained .keras model; repeat")  # fmt: skip
    parser.add_argument("--input-size", type=_size, default=(385, 481), help="H,W")
    parser.add_argument("--calibration-steps", type=int, default=100)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--qat-steps", type=int, default=100)
    parser.add_argument("--qat-batch-size", type=int, default=4)
    parser.add_argument("--qat-lr", type=lambda s: [float(v) for v in s.split(",")],
                        default=[1e-6], help="comma-separated: one QAT file each")  # fmt: skip
    parser.add_argument("--debug-images", type=int, default=8,
                        help="val images of the per-layer table; 0 leaves it out")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--work", default="runs/qat_camvid", help="where the files stay")
    parser.add_argument("--out", default="benchmarks/QAT_CAMVID.md")
    parser.add_argument("--fresh", action="store_true",
                        help="measure every model again, not reuse `--work`'s results")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = [_measured_or_kept(label, path, args, work) for label, path in args.model]
    report = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "model", "fresh")},
        "command": "python -m benchmarks.qat_camvid " + shlex.join(argv or sys.argv[1:]),
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_report(out, markdown(report), report)
    write_chart(report, out.with_suffix(".png"))
    return report


if __name__ == "__main__":
    main()
