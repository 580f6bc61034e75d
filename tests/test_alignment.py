"""Pixel alignment: the logits' upsampling must put each feature cell's value where the backbone's
cell is centred (issue 11, item 13). `benchmarks.alignment` measures the cell centres with an
impulse sweep through a backbone whose filters are symmetric."""

import numpy as np
import pytest

from benchmarks.alignment import middle_cell_centre, misalignment, resize_positions
from tfdeeplab import DeepLabV3
from tfdeeplab.inference import model_align_corners
from tfdeeplab.layers import ResizeLike
from tfdeeplab.layers.resize_like import IMAGENET_MEAN_RGB


@pytest.fixture(scope="module")
def mobilenetv2_129():
    return misalignment("mobilenetv2", 129, output_stride=16, alpha=0.35)


def test_cells_land_on_their_centres_with_aligned_corners_at_16k_plus_1(mobilenetv2_129):
    # MobileNetV2's stride-16 cells sit on pixels 16·i at 16k + 1 inputs ...
    assert abs(mobilenetv2_129["offset_from_stride_i_px"]) < 0.05
    # ... where corner-aligned upsampling puts them (within 0.05 px); half-pixel centres (the
    # default before) misplace them by up to 5 px.
    assert mobilenetv2_129["align_corners_max_error_px"] < 0.05
    assert mobilenetv2_129["half_pixel_max_error_px"] > 4.5


@pytest.mark.parametrize("pointrend", [False, True])
def test_default_model_computes_any_size_on_the_aligned_canvas(pointrend):
    """At 128×96 the model pads to 129×97 (mean colour), where cells are aligned, and crops
    back: the same logits as a 129×97 input whose last row and column are that colour."""
    model = DeepLabV3(3, "mobilenetv2", alpha=0.35, aspp_filters=8, pointrend=pointrend)
    assert model_align_corners(model)
    x = np.random.default_rng(0).uniform(0, 255, (1, 128, 96, 3)).astype("float32")
    canvas = np.broadcast_to(np.float32(IMAGENET_MEAN_RGB), (1, 129, 97, 3)).copy()
    canvas[:, :128, :96] = x
    np.testing.assert_allclose(model(x), model(canvas)[:, :128, :96], rtol=1e-5, atol=1e-6)
    aligned = DeepLabV3(3, "mobilenetv2", alpha=0.35, input_shape=(129, 129, 3))
    assert model_align_corners(aligned)


def test_resize_positions_are_the_two_conventions():
    np.testing.assert_allclose(resize_positions(5, 65, True)[1:-1], [16, 32, 48], atol=1e-4)
    # Half-pixel: cell i at (i + 0.5)·65/5 - 0.5.
    np.testing.assert_allclose(resize_positions(5, 65, False)[1:-1], [19, 32, 45], atol=1e-4)


def test_middle_cell_centre_of_a_known_profile():
    # A tent response of width 16 around pixel 8·c + 3 for each of 9 cells.
    pixels = np.arange(80)[:, None]
    profile = np.maximum(0, 16 - np.abs(pixels - (8 * np.arange(9) + 3)))
    middle, centre = middle_cell_centre(profile.astype(float))
    assert middle == 4 and centre == pytest.approx(35, abs=1e-6)


def test_models_saved_before_the_option_keep_half_pixel_upsampling():
    model = DeepLabV3(3, "mobilenetv2", alpha=0.35, align_corners=False)
    config = model.get_layer("logits").get_config()
    del config["align_corners"]
    assert ResizeLike.from_config(config).align_corners is False
