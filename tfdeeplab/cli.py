"""The `tfdeeplab` command line."""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

EPILOG = "Run `tfdeeplab COMMAND --help` for the options of one command."


def _generated_scene(height, width, seed):
    """A float RGB image in [0, 255]: a textured background with a few discs and bars."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x / width, y / height, 0.5 + 0 * x], -1) * 120 + rng.normal(
        0, 12, (height, width, 3)
    )
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.05, 0.3) * min(height, width)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(60, 255, 3)
    row = int(rng.integers(0, height - 3))
    image[row : row + 3] = rng.uniform(60, 255, 3)
    return np.clip(image, 0, 255).astype("float32")


def demo(args):
    """Builds DeepLabV3, runs it on a generated image in Keras and LiteRT, writes the results."""
    import keras

    from converters import LiteRTModel, convert_to_tflite
    from tfdeeplab import DeepLabV3
    from tfdeeplab.io import atomic_write_bytes
    from tfdeeplab.visualize import colourize, save_panels

    out = Path(args.out)
    keras.utils.set_random_seed(args.seed)
    model = DeepLabV3(
        args.num_classes,
        backbone=args.backbone,
        output_stride=args.output_stride,
        alpha=args.alpha,
    )
    model.summary(line_length=100, expand_nested=False)
    image = _generated_scene(args.image_size, args.image_size, args.seed)[None]

    logits = model.predict(image, verbose=0)
    start = time.perf_counter()
    logits = model.predict(image, verbose=0)
    keras_ms = 1000 * (time.perf_counter() - start)
    print(f"Keras output: logits {logits.shape} {logits.dtype}, {keras_ms:.0f} ms")

    flatbuffer = convert_to_tflite(model, image.shape)
    tflite_path = atomic_write_bytes(out / "model_fp32.tflite", flatbuffer)
    litert = LiteRTModel(flatbuffer)
    litert_logits = litert(image)
    ops = sorted(set(litert.op_names))
    error = float(np.max(np.abs(litert_logits - logits)) / max(np.max(np.abs(logits)), 1.0))
    agreement = float(np.mean(litert_logits.argmax(-1) == logits.argmax(-1)))
    print(f"TFLite fp32: {len(flatbuffer) / 2**20:.1f} MiB, ops {', '.join(ops)}")
    print(
        f"LiteRT vs Keras: max relative logit error {error:.1e}, argmax agreement {agreement:.2%}"
    )

    mask = logits[0].argmax(-1)
    picture = save_panels(out / "prediction.png", [image[0], colourize(mask, args.num_classes)])
    print(
        f"(untrained weights: the prediction shows the pipeline, not a segmentation)\n"
        f"Wrote {picture} and {tflite_path}"
    )
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfdeeplab", description="DeepLabV3 semantic segmentation.", epilog=EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "demo", help="build a model, run it in Keras and LiteRT on a generated image"
    )
    run.add_argument("--backbone", default="mobilenetv2")
    run.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    run.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    run.add_argument("--num-classes", type=int, default=5)
    run.add_argument("--image-size", type=int, default=257)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="runs/demo", help="output folder")
    run.set_defaults(handler=demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"tfdeeplab {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
