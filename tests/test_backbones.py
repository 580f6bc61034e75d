import math

import keras
import numpy as np
import pytest

from tests.helpers import (
    TINY_KWARGS,
    assert_litert_matches,
    backbone_params,
    images,
    randomize_batchnorm,
    relative_error,
)
from tfdeeplab import BACKBONES, get_backbone
from tfdeeplab.layers import AtrousConv2D

PREPROCESS = {
    "resnet50": keras.applications.resnet.preprocess_input,
    "resnet101": keras.applications.resnet.preprocess_input,
    "vgg16": keras.applications.vgg16.preprocess_input,
    "densenet121": keras.applications.densenet.preprocess_input,
    "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
    "xception": keras.applications.xception.preprocess_input,
}
# Xception keeps keras.applications' unpadded stem (3×3 stride-2 "valid", then 3×3 "valid").
XCEPTION_STEM = {513: 254, 65: 30}


def expected_size(name, size, stride):
    if name == "xception":
        return math.ceil(XCEPTION_STEM[size] / (stride // 2))
    return math.ceil(size / stride)


def test_every_registered_backbone_is_tested():
    assert set(BACKBONES) == set(PREPROCESS) == set(TINY_KWARGS)


@pytest.mark.parametrize("name", backbone_params(BACKBONES))
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_shapes_follow_the_output_stride(name, output_stride, built_backbone):
    backbone = built_backbone(name, output_stride)
    # Symbolic shapes at the paper's crop size, and a real forward pass at a small odd size.
    symbolic = backbone.compute_output_spec(keras.KerasTensor((1, 513, 513, 3)))
    high = expected_size(name, 513, output_stride)
    assert symbolic["high"].shape[1:3] == (high, high)
    low = expected_size(name, 513, 4)
    assert symbolic["low"].shape[1:3] == (low, low)

    features = backbone(images(2, 65, 65))
    high = expected_size(name, 65, output_stride)
    assert tuple(features["high"].shape[:3]) == (2, high, high)
    assert tuple(features["low"].shape[1:3]) == (expected_size(name, 65, 4),) * 2


@pytest.mark.parametrize("name", backbone_params(BACKBONES))
def test_mid_features_for_an_auxiliary_head_are_at_stride_16(name):
    backbone = get_backbone(name, output_stride=8, mid=True, **TINY_KWARGS[name])
    symbolic = backbone.compute_output_spec(keras.KerasTensor((1, 513, 513, 3)))
    assert symbolic["mid"].shape[1:3] == (expected_size(name, 513, 8),) * 2  # dilated stage


@pytest.mark.parametrize("name", backbone_params(BACKBONES))
def test_weights_file_gives_keras_applications_features(name, tmp_path):
    """At output stride 32 the backbone *is* the keras.applications network with its weights."""
    kwargs = TINY_KWARGS[name]
    reference = BACKBONES[name].application(
        include_top=False, weights=None, input_shape=(None, None, 3), **kwargs
    )
    randomize_batchnorm(reference)
    path = tmp_path / f"{name}.weights.h5"
    reference.save_weights(path)

    backbone = get_backbone(name, output_stride=32, weights=str(path), **kwargs)
    x = images(2, 64, 64)
    high_layer = BACKBONES[name].high_layer
    if high_layer:
        reference = keras.Model(reference.input, reference.get_layer(high_layer).output)
    expected = reference.predict(PREPROCESS[name](x.copy()), verbose=0)
    got = backbone.predict(x, verbose=0)["high"]
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, np.max(np.abs(expected)))


@pytest.mark.parametrize("name", backbone_params(BACKBONES))
@pytest.mark.parametrize("output_stride", [16, 8])
def test_litert_runs_dilated_backbones_without_space_to_batch(name, output_stride, built_backbone):
    backbone = built_backbone(name, output_stride)
    ops = assert_litert_matches(backbone, images(1, 64, 64))
    assert "CONV_2D" in ops


def _rates(backbone, prefix):
    return {
        layer.name: layer.dilation_rate[0]
        for layer in backbone.layers
        if layer.name.startswith(prefix)
        and hasattr(layer, "dilation_rate")
        and layer.kernel_size[0] > 1
    }


@pytest.mark.parametrize("alpha, channels", [(1.0, 320), (0.35, 112)])
def test_mobilenetv2_feeds_its_last_inverted_residual_block_to_the_head(alpha, channels):
    """DeepLab's MobileNetV2 reads block 16's projection (320·alpha channels), not the 1280-channel
    1×1 expansion that keras.applications adds for its classifier."""
    backbone = get_backbone("mobilenetv2", output_stride=16, alpha=alpha)
    assert backbone.output["high"].shape[-1] == channels
    assert "Conv_1" not in {layer.name for layer in backbone.layers}


def test_resnet_dilation_and_multi_grid_follow_the_paper():
    os8 = get_backbone("resnet50", output_stride=8)
    assert set(_rates(os8, "conv4_").values()) == {2}
    assert set(_rates(os8, "conv5_").values()) == {4}
    assert all(isinstance(os8.get_layer(n), AtrousConv2D) for n in _rates(os8, "conv5_"))
    assert os8.get_layer("conv4_block1_1_conv").strides == (1, 1)
    assert set(_rates(os8, "conv3_").values()) == {1}

    grid = get_backbone("resnet50", output_stride=16, multi_grid=(1, 2, 4))
    assert _rates(grid, "conv5_") == {
        "conv5_block1_2_conv": 2,
        "conv5_block2_2_conv": 4,
        "conv5_block3_2_conv": 8,
    }


def test_removed_pool_strides_become_centred_windows():
    vgg = get_backbone("vgg16", output_stride=8)
    pool = vgg.get_layer("block4_pool")
    assert (pool.strides, pool.pool_size, pool.padding) == ((1, 1), (3, 3), "same")
    assert set(_rates(vgg, "block5_").values()) == {2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet51"}, "backbone='resnet51' is not supported; choose one of: resnet50"),
        ({"name": "resnet50", "output_stride": 4}, "output_stride=4 is not supported; choose"),
        ({"name": "vgg16", "multi_grid": (1, 2, 4)}, "multi_grid applies to the last ResNet"),
        ({"name": "resnet50", "multi_grid": (1, 2)}, "must be 3 positive integers"),
        ({"name": "resnet50", "alpha": 0.5}, "alpha=0.5 applies only to: mobilenetv2"),
        ({"name": "mobilenetv2", "alpha": 0}, "alpha=0 must be > 0"),
    ],
)
def test_bad_arguments_name_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        get_backbone(**kwargs)


@pytest.mark.parametrize("name", backbone_params(["mobilenetv2", "resnet50", "resnet101"]))
def test_dilated_maps_are_the_strided_maps_sampled_every_other_cell(name):
    """With the same weights, OS16(x)["high"][:, ::2, ::2] == OS32(x)["high"]: replacing the
    last stride by dilation computes the same windows, plus the ones in between.

    Exact where every strided window of the replaced layer is centred on an input cell that
    the unstrided layer also centres on: 'same' convolutions with symmetric padding on odd
    sizes (MobileNetV2's `correct_pad` at 16k+1 inputs) and 1×1 stride-2 convolutions (the
    ResNets, at any size). It does not hold for Xception, whose unpadded stem shifts its maps,
    nor for VGG16 and DenseNet121, whose last stride is a 2×2 pooling replaced by a centred
    3×3 window (see test_removed_pool_strides_become_centred_windows).
    """
    kwargs = TINY_KWARGS[name]
    strided = get_backbone(name, output_stride=32, **kwargs)
    randomize_batchnorm(strided)
    dilated = get_backbone(name, output_stride=16, **kwargs)
    dilated.set_weights(strided.get_weights())
    x = images(1, 65, 65)
    expected = np.asarray(strided(x)["high"])
    got = np.asarray(dilated(x)["high"])[:, ::2, ::2]
    assert got.shape == expected.shape
    assert relative_error(got, expected) < 1e-5
