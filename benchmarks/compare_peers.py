"""Our DeepLabV3 against keras-hub's and torchvision's, same size, batch and threads, one run.

    python -m benchmarks.compare_peers --input-size 513 --threads 2 --json peers.json
    python -m benchmarks.compare_peers --torch-python /opt/torch-venv/bin/python

Each model runs in its own subprocess (as in `benchmarks.latency`), untrained, with 21 classes:
- ours: ResNet-50 at output stride 8 and 16, Keras, as a compiled `tf.function`;
- keras-hub `DeepLabV3ImageSegmenter` with its ResNet-50 preset layout (DeepLabV3+ decoder, ASPP
  on the undilated stride-32 map, so less arithmetic; inputs must be multiples of 32, so 512
  where the others run 513);
- torchvision `deeplabv3_resnet50` (output stride 8), under `torch.inference_mode`.
- `--peer-tflite PATH` (repeatable): published TFLite files, e.g. TensorFlow's mobile
  DeepLabV3, measured by the latency harness at their own input size.
A peer whose library is not installed is skipped with a note. torch may live in another
environment (`--torch-python`), since it does not share TensorFlow's dependencies. Latency is
given as a ratio to torchvision's (or to the first row without it); MACs show how much work each
model does at this size.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.stats import Timing, add_timing_arguments, machine, time_runs
from benchmarks.worker import (
    add_onednn_argument,
    module_available,
    run_in_subprocess,
    set_tf_threads,
)

NUM_CLASSES = 21


def _images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def _ours(output_stride, batch, size, threads, timing):
    tf = set_tf_threads(threads)
    from benchmarks.flops import graph_macs
    from tfdeeplab import DeepLabV3

    model = DeepLabV3(NUM_CLASSES, backbone="resnet50", output_stride=output_stride)
    return _keras_timing(tf, model, graph_macs, batch, size, timing)


def _keras_timing(tf, model, graph_macs, batch, size, timing):
    forward = tf.function(lambda x: model(x, training=False))
    spec = tf.TensorSpec((batch, size, size, 3), tf.float32)
    concrete = forward.get_concrete_function(spec)
    inputs = tf.constant(_images(batch, size))
    result = time_runs(lambda: np.asarray(forward(inputs)), **timing)
    macs, params = graph_macs(concrete), int(model.count_params())
    return {**result, "macs": macs, "params": params, "input_size": size}


def _keras_hub(batch, size, threads, timing):
    tf = set_tf_threads(threads)
    import keras_hub

    from benchmarks.flops import graph_macs

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[6, 12, 18],
        low_level_feature_key="P2",
    )
    model = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=NUM_CLASSES)
    # Its decoder concatenates the stride-4 map with the ×8-upsampled stride-32 one: the input
    # must be a multiple of 32 (513 fails in Concatenate), so it runs at the next size down.
    size -= size % 32
    return {**_keras_timing(tf, model, graph_macs, batch, size, timing), "input_size": size}


def _torchvision(batch, size, threads, timing):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    model = deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False
    ).eval()
    inputs = torch.from_numpy(_images(batch, size).transpose(0, 3, 1, 2).copy())

    def run():
        with torch.inference_mode():
            return model(inputs)["out"].numpy()

    result = time_runs(run, **timing)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(inputs)
    params = sum(parameter.numel() for parameter in model.parameters())
    macs = counter.get_total_flops() // 2
    return {**result, "macs": macs, "params": int(params), "input_size": size}


PEERS = {
    "tfdeeplab ResNet-50 OS8": ("tensorflow", lambda *a: _ours(8, *a)),
    "tfdeeplab ResNet-50 OS16": ("tensorflow", lambda *a: _ours(16, *a)),
    "keras-hub DeepLabV3 ResNet-50": ("keras_hub", _keras_hub),
    "torchvision deeplabv3_resnet50": ("torchvision", _torchvision),
}


def peer_job(job):
    """One peer's measurement, as a `benchmarks.worker` target."""
    _, measure = PEERS[job["name"]]
    return measure(job["batch"], job["input_size"], job["threads"], job["timing"])


def compare(
    size,
    batch=1,
    threads=None,
    timing=None,
    torch_python=None,
    progress=print,
    onednn=False,
    peer_tflites=(),
):
    """Measures every installed peer, each in its own subprocess (TF ones with oneDNN kernels
    on or off as `onednn` says); returns the rows with their latency ratio to torchvision's.

    `peer_tflites`: published `.tflite` files measured beside them by the latency harness, at
    their own input size (a fixed-size phone model); their ratio is given only when that size
    is the comparison's."""
    threads = threads or os.cpu_count()
    sizes = [_fixed_size(path) for path in peer_tflites]  # bad paths fail before measuring
    rows, skipped = [], {}
    for name, (module, _) in PEERS.items():
        python = torch_python if module == "torchvision" and torch_python else sys.executable
        if not module_available(module, python):
            skipped[name] = f"{module} is not installed for {python}"
            progress(f"{name}: skipped ({skipped[name]})")
            continue
        job = {
            "name": name,
            "batch": batch,
            "input_size": size,
            "threads": threads,
            "timing": timing or {},
        }
        measured = run_in_subprocess(
            "benchmarks.compare_peers:peer_job", job, name, python=python, onednn=onednn
        )
        row = {"name": name, **measured, "onednn": onednn}
        rows.append(row)
        progress(f"{name}: p50 {row['runs']['p50_ms']:.1f} ms, {row['macs'] / 1e9:.1f} GMACs")
    for path, size in zip(peer_tflites, sizes, strict=True):
        rows.append(_tflite_peer(path, size, batch, threads, timing, progress))
    reference = next((row for row in rows if row["name"].startswith("torchvision")), None)
    reference = reference or (rows[0] if rows else None)
    for row in rows:
        same = row["input_size"] == reference["input_size"]
        row["latency_ratio"] = row["runs"]["p50_ms"] / reference["runs"]["p50_ms"] if same else None
    return {
        "machine": machine(),
        "settings": {
            "input_size": size,
            "batch": batch,
            "threads": threads,
            "timing": timing,
            "onednn": onednn,
        },
        "reference": reference["name"] if reference else None,
        "results": rows,
        "skipped": skipped,
    }


def _fixed_size(path):
    from benchmarks.latency import artifact_input_size

    path = Path(path)
    size = artifact_input_size(path) if path.suffix == ".tflite" and path.is_file() else None
    if size is None:
        raise ValueError(f"--peer-tflite {path}: not a .tflite file with a fixed input size")
    return size


def _tflite_peer(path, size, batch, threads, timing, progress):
    """A published .tflite file's row, measured by `benchmarks.artifacts` at its own size."""
    from benchmarks.latency import artifact_job

    job = artifact_job(path, size, batch, threads, timing)
    measured = run_in_subprocess("benchmarks.artifacts:measure_job", job, str(path))
    name = f"published {Path(path).name} (TFLite {measured['precision']})"
    progress(f"{name}: p50 {measured['runs']['p50_ms']:.1f} ms at {size[0]}×{size[1]}")
    return {"name": name, **measured, "input_size": size[0], "params": None}


def markdown_table(report):
    lines = [
        f"| model | input | p50 ms | mean ms | p95 ms | runs | GMACs | params (M) "
        f"| p50 / {report['reference']} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        runs = row["runs"]
        lines.append(
            f"| {row['name']} | {row['input_size']} | {runs['p50_ms']:.1f} | "
            f"{runs['mean_ms']:.1f} | {runs['p95_ms']:.1f} | {runs['count']} | "
            f"{row['macs'] / 1e9:.2f} | {_millions(row['params'])} | {_ratio(row)} |"
        )
    skipped = report["skipped"].items()
    lines += [f"| {name} | skipped: {why} | | | | | | | |" for name, why in skipped]
    return "\n".join(lines)


def add_peer_tflite_argument(parser):
    parser.add_argument(
        "--peer-tflite",
        action="append",
        default=[],
        metavar="PATH",
        help="a published .tflite file to measure beside the peers (repeatable), e.g. "
        "../shared/peers/deeplabv3_257_mv_gpu.tflite",
    )


def _millions(count):
    return "—" if count is None else f"{count / 1e6:.1f}"


def _ratio(row):
    ratio = row["latency_ratio"]
    return "— (other input size)" if ratio is None else f"{ratio:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-size", type=int, default=513)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    add_timing_arguments(parser)
    add_onednn_argument(parser)
    parser.add_argument("--torch-python", help="python of an environment with torchvision")
    add_peer_tflite_argument(parser)
    parser.add_argument("--json", help="write the report to this JSON file")
    args = parser.parse_args(argv)
    timing = Timing.from_args(args).as_dict()
    report = compare(
        args.input_size,
        args.batch,
        args.threads,
        timing,
        args.torch_python,
        onednn=args.onednn,
        peer_tflites=args.peer_tflite,
    )
    print(markdown_table(report))
    if args.json:
        from tfdeeplab.atomic import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
        print(f"wrote {Path(args.json)}")
    return report


if __name__ == "__main__":
    main()
