"""Where do the cells of a backbone's stride-OS map sit in the image?

Bilinear resizing with half-pixel centres (TensorFlow's default, and `point_sample`'s
align_corners=False convention) assumes cell i of a stride-s map is centred on pixel
s·i + (s - 1)/2; align_corners=True assumes s·i (for s·k + 1 inputs such as 513). Which holds
depends on how every strided layer pads. This script measures it: it sets every kernel of the
backbone to a positive constant and batch norm to the identity, so that the network becomes a
chain of symmetric smoothing filters whose response to a one-pixel impulse is centred on the
receptive field of each cell. Sweeping the impulse along a row and fitting the response
centroid (in cells) against the pixel gives each cell's centre in pixels. It then puts each
cell through the models' own upsampling layer (`ResizeLike`, both conventions) and reports the
largest distance between where a cell's value lands and where the cell really is.

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


def response_profile(backbone, size, output_stride=16, alpha=0.35):
    """(impulse positions, map width): how strongly each cell of the middle row of a
    `size`² input's stride-`output_stride` map responds to a one-pixel impulse at each column."""
    from tfdeeplab import get_backbone

    kwargs = {"alpha": alpha} if backbone == "mobilenetv2" else {}
    model = get_backbone(backbone, output_stride=output_stride, **kwargs)
    _symmetric_weights(model)
    # ImageNormalization sits inside: an impulse on a grey image, not on black.
    base = np.full((1, size, size, 3), 128.0, np.float32)
    impulses = np.repeat(base, size, axis=0)
    impulses[np.arange(size), size // 2, np.arange(size)] += 100.0
    reference = np.asarray(model(base)["high"])
    responses = []
    for start in range(0, size, 16):
        out = np.asarray(model(impulses[start : start + 16])["high"])
        responses.append(np.abs(out - reference).sum(axis=(1, 3)))
    return np.concatenate(responses)


def middle_cell_centre(profile):
    """(the middle cell's index, the pixel it is centred on): the impulse position where the
    response is symmetric around it (a local centroid over a window that stays off the
    borders). Strided convolutions are equivariant to shifts by the stride, so cell c sits at
    that pixel + stride·(c - middle)."""
    width = profile.shape[1]
    middle = width // 2
    reach = max(1, min(middle, width - 1 - middle) - 1)
    window = np.arange(middle - reach, middle + reach + 1)
    local = profile[:, window]
    centroid = (local * window).sum(1) / np.maximum(local.sum(1), 1e-30)
    crossing = np.nonzero(np.diff(np.sign(centroid - middle)))[0][0]
    left, right = centroid[crossing] - middle, centroid[crossing + 1] - middle
    return middle, crossing + left / (left - right)


def resize_positions(cells, size, align_corners):
    """Where `tfdeeplab.layers.ResizeLike` (the models' logits upsampling) puts each of `cells`
    cells in a `size`-pixel row: the centroid of a one-hot cell resized to the row, measured
    through the layer itself."""
    from tfdeeplab.layers import ResizeLike

    layer = ResizeLike("bilinear", align_corners)
    onehots = np.eye(cells, dtype=np.float32)[:, None, :, None]  # (cells, 1, cells, 1)
    rows = np.asarray(layer([onehots, np.zeros((cells, 1, size, 1), np.float32)]))[:, 0, :, 0]
    return (rows * np.arange(size)).sum(1) / rows.sum(1)


def misalignment(backbone, size, output_stride=16, alpha=0.35):
    """The cells' offset from pixel stride·i, and per upsampling convention the largest
    |cell centre − where the upsampling puts the cell's value| in pixels over the cells off
    the border (a border cell's bilinear tent is cut off by the image edge)."""
    profile = response_profile(backbone, size, output_stride, alpha)
    cells = profile.shape[1]
    middle, centre = middle_cell_centre(profile)
    offset = float(centre - output_stride * middle)
    interior = np.arange(1, cells - 1)
    row = {"backbone": backbone, "size": size, "cells": cells, "stride": output_stride}
    row["offset_from_stride_i_px"] = offset
    for name, corners in (("half_pixel", False), ("align_corners", True)):
        placed = resize_positions(cells, size, corners)[interior]
        error = np.abs(output_stride * interior + offset - placed)
        row[f"{name}_max_error_px"] = float(error.max())
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 129, 256, 257])
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    print(
        "| backbone | input | cells | cell centre − stride·i (px) | largest error, half-pixel "
        "resize (px) | largest error, align_corners resize (px) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for backbone in args.backbones:
        for size in args.sizes:
            row = misalignment(backbone, size, args.output_stride)
            rows.append(row)
            cells = f"| {backbone} | {size} | {row['cells']} "
            offset = f"| {row['offset_from_stride_i_px']:+.2f} "
            half, corners = row["half_pixel_max_error_px"], row["align_corners_max_error_px"]
            print(cells + offset + f"| {half:.2f} | {corners:.2f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)


if __name__ == "__main__":
    main()
