"""Where do the cells of a backbone's stride-OS map sit in the image?

Bilinear resizing with half-pixel centres (TensorFlow's default, and `point_sample`'s
align_corners=False convention) assumes cell i of a stride-s map is centred on pixel
s·i + (s - 1)/2; align_corners=True assumes s·i (for s·k + 1 inputs such as 513). Which holds
depends on how every strided layer pads. This script measures it: it sets every kernel of the
backbone to a positive constant and batch norm to the identity, so that the network becomes a
chain of symmetric smoothing filters whose response to a one-pixel impulse is centred on the
receptive field of each cell. Sweeping the impulse along a row and fitting the response
centroid (in cells) against the pixel gives each cell's centre in pixels.

    python -m benchmarks.alignment --backbones mobilenetv2 resnet50 --sizes 128 129 --json out.json
"""

import argparse
import json

import numpy as np


def _symmetric_weights(model):
    import keras

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [np.ones_like(gamma), np.zeros_like(beta), np.zeros_like(mean), np.ones_like(var)]
            )
            continue
        weights = layer.get_weights()
        if not weights:
            continue
        kernel = weights[0]
        fan_in = np.prod(kernel.shape[:-1]) if kernel.ndim > 1 else 1
        layer.set_weights(
            [np.full_like(kernel, 1.0 / fan_in)] + [np.zeros_like(w) for w in weights[1:]]
        )


def cell_centres(backbone, size, output_stride=16, alpha=0.35):
    """Returns (the middle cell's centre along x in pixels, that cell's index, the map width)."""
    from tfdeeplab import get_backbone

    kwargs = {"alpha": alpha} if backbone == "mobilenetv2" else {}
    model = get_backbone(backbone, output_stride=output_stride, **kwargs)
    _symmetric_weights(model)
    # ImageNormalization sits inside: an impulse on a grey image, not on black.
    base = np.full((1, size, size, 3), 128.0, np.float32)
    positions = np.arange(size)
    impulses = np.repeat(base, len(positions), axis=0)
    impulses[np.arange(len(positions)), size // 2, positions] += 100.0
    reference = np.asarray(model(base)["high"])
    responses = []
    for start in range(0, len(positions), 16):
        out = np.asarray(model(impulses[start : start + 16])["high"])
        responses.append(np.abs(out - reference).sum(axis=(1, 3)))
    profile = np.concatenate(responses)  # (positions, map width)
    # The middle cell's centre: the impulse position where the response is symmetric around
    # it (a local centroid over a window that stays off the borders).
    width = profile.shape[1]
    middle = width // 2
    reach = max(1, min(middle, width - 1 - middle) - 1)
    window = np.arange(middle - reach, middle + reach + 1)
    local = profile[:, window]
    centroid = (local * window).sum(1) / np.maximum(local.sum(1), 1e-30)
    crossing = np.nonzero(np.diff(np.sign(centroid - middle)))[0][0]
    left, right = centroid[crossing] - middle, centroid[crossing + 1] - middle
    centre = positions[crossing] + left / (left - right)
    return centre, middle, width


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 129])
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    print(
        "| backbone | input | cells | cell centre − half-pixel centre (px) | − corner centre (px) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for backbone in args.backbones:
        for size in args.sizes:
            centre, cell, width = cell_centres(backbone, size, args.output_stride)
            stride = args.output_stride
            half = float(centre - (stride * cell + (stride - 1) / 2))
            corner = float(centre - stride * cell)
            rows.append(
                {
                    "backbone": backbone,
                    "size": size,
                    "cells": width,
                    "stride": stride,
                    "offset_from_half_pixel_px": half,
                    "offset_from_corner_px": corner,
                }
            )
            print(f"| {backbone} | {size} | {width} | {half:+.2f} | {corner:+.2f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)


if __name__ == "__main__":
    main()
