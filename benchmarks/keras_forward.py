"""Forward latency of DeepLabV3 configurations in Keras, as a compiled `tf.function`.

    python -m benchmarks.keras_forward --backbone resnet50 --output-stride 8 16 --input-size 513
    python -m benchmarks.keras_forward --output-stride 16 8 --pointrend both

Every configuration is measured in the same process, one after the other, so their ratios are
comparable; absolute times drift on shared machines. Prints a table and writes JSON.
"""

import argparse
import json

import numpy as np

from benchmarks.stats import Timing, add_timing_arguments, machine, time_runs
from benchmarks.worker import add_onednn_argument, start_tensorflow


def measure(
    backbone, output_stride, input_size, batch, num_classes, jit_compile, timing, pointrend=False
):
    import tensorflow as tf

    from tfdeeplab import DeepLabV3

    model = DeepLabV3(
        num_classes, backbone=backbone, output_stride=output_stride, pointrend=pointrend
    )
    images = tf.constant(
        np.random.default_rng(0).uniform(0, 255, (batch, input_size, input_size, 3)), tf.float32
    )
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    result = time_runs(lambda: forward(images).numpy(), **timing)
    return {
        "backbone": backbone,
        "output_stride": output_stride,
        "input_size": input_size,
        "batch": batch,
        "jit_compile": jit_compile,
        "pointrend": pointrend,
        "params": model.count_params(),
        **result,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", nargs="+", default=["resnet50"])
    parser.add_argument("--output-stride", nargs="+", type=int, default=[8])
    parser.add_argument("--input-size", type=int, default=513)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--jit-compile", action="store_true", help="compile with XLA")
    parser.add_argument(
        "--pointrend", choices=("off", "on", "both"), default="off", help="PointRend head"
    )
    parser.add_argument("--threads", type=int, default=0, help="TF intra/inter-op threads")
    add_timing_arguments(parser, warmup_runs=2, min_secs=5.0)
    add_onednn_argument(parser)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    onednn = start_tensorflow(args.onednn)
    import tensorflow as tf

    from tfdeeplab.atomic import atomic_write_bytes

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    timing = Timing.from_args(args).as_dict()
    results = []
    print(f"{'model':<28}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'runs':>6}")
    variants = {"off": (False,), "on": (True,), "both": (False, True)}[args.pointrend]
    for backbone in args.backbone:
        for output_stride in args.output_stride:
            for pointrend in variants:
                row = measure(
                    backbone,
                    output_stride,
                    args.input_size,
                    args.batch,
                    args.num_classes,
                    args.jit_compile,
                    timing,
                    pointrend,
                )
                results.append(row)
                runs = row["runs"]
                label = f"{backbone} OS{output_stride}" + (" + PointRend" if pointrend else "")
                print(
                    f"{label:<28}{runs['mean_ms']:>10.1f}"
                    f"{runs['p50_ms']:>10.1f}{runs['p95_ms']:>10.1f}{runs['count']:>6}",
                    flush=True,
                )
    report = {
        "machine": machine(),
        "settings": {"onednn": onednn, "threads": args.threads, "timing": timing},
        "results": results,
    }
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    return report


if __name__ == "__main__":
    main()
