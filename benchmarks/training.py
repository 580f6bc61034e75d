"""Training throughput: images/s of `model.fit` steps and of the tf.data pipeline alone.

    python -m benchmarks.training --data runs/scenes --backbone mobilenetv2 --image-size 256

Both are measured in the same run, so their ratio is meaningful: the pipeline must be several
times faster than training, or training waits for input. With --mixed-precision both float32
and mixed precision steps are measured. Writes JSON with --json.
"""

import argparse
import json
import time

from benchmarks.stats import machine
from benchmarks.worker import add_onednn_argument, start_tensorflow


def pipeline_images_per_second(dataset, batches, batch_size):
    iterator = iter(dataset)
    next(iterator)  # start-up (file listing, first decode) is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def training_images_per_second(model, dataset, steps, batch_size):
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace, warm up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="folder dataset; default: synthetic scenes")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pipeline-batches", type=int, default=100)
    parser.add_argument("--mixed-precision", action="store_true", help="also measure mixed")
    add_onednn_argument(parser, default=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    onednn = start_tensorflow(args.onednn)
    import keras

    from tfdeeplab import DeepLabV3
    from tfdeeplab.atomic import atomic_write_bytes
    from tfdeeplab.data import make_dataset, scan_split, synthetic_scenes
    from tfdeeplab.losses import SegmentationLoss
    from tfdeeplab.training import dtype_policy

    data = args.data or synthetic_scenes("runs/benchmark_scenes", 200, args.image_size, 6, seed=0)
    folder = scan_split(data, "train")
    size = (args.image_size, args.image_size)
    dataset = make_dataset(folder, size, args.batch_size, augment=True, repeat=True)
    results = {
        "machine": machine(),
        "settings": vars(args) | {"data": str(data), "onednn": onednn},
        "pipeline_images_per_second": pipeline_images_per_second(
            dataset, args.pipeline_batches, args.batch_size
        ),
        "training": {},
    }
    print(f"tf.data pipeline alone: {results['pipeline_images_per_second']:.1f} images/s")
    for mixed in (False, True) if args.mixed_precision else (False,):
        with dtype_policy(mixed):
            model = DeepLabV3(
                folder.num_classes,
                backbone=args.backbone,
                output_stride=args.output_stride,
                alpha=args.alpha,
            )
            model.compile(
                keras.optimizers.SGD(0.01, momentum=0.9), SegmentationLoss(folder.num_classes)
            )
            rate = training_images_per_second(model, dataset, args.steps, args.batch_size)
        results["training"]["mixed" if mixed else "float32"] = rate
        print(f"model.fit ({'mixed precision' if mixed else 'float32'}): {rate:.2f} images/s")
    ratio = results["pipeline_images_per_second"] / results["training"]["float32"]
    results["pipeline_to_training_ratio"] = ratio
    print(f"pipeline / training = {ratio:.1f}x")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(results, indent=2).encode())
    return results


if __name__ == "__main__":
    main()
