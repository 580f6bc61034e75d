"""Sliding-window inference (`tfdeeplab.tiling`, `tfdeeplab.predict_tiled`): window layout,
blending, equality with whole-image inference away from window edges, nodata, and GeoTIFF out
with the input's georeference."""

import json

import keras
import numpy as np
import pytest

from tfdeeplab import predict_tiled
from tfdeeplab.tiling import (
    NODATA_CLASS,
    blend_window,
    check_tiling,
    seam_error,
    tile_origins,
)

# The local model's receptive field reaches RADIUS pixels: 3×3 (1) then 5×5 at rate 2 (4).
RADIUS = 5
TILE, OVERLAP = 64, 16


@pytest.fixture(scope="module")
def local_model():
    """Three classes from two convolutions with seeded random weights: every output pixel
    depends on the input within RADIUS pixels, so a window's logits are exact wherever the
    window reaches RADIUS pixels beyond them."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs / 255.0)
    logits = keras.layers.Conv2D(3, 5, padding="same", dilation_rate=2)(x)
    return keras.Model(inputs, logits)


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _image(height=150, width=170, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    image[:, : width // 2] *= 0.3  # two halves that the model tells apart
    return image


def test_window_origins_end_at_the_edge_and_the_blend_is_positive_and_flat_inside():
    assert tile_origins(150, 64, 16) == [0, 48, 86]  # step 48; the last moved back to 150-64
    assert tile_origins(64, 64, 16) == [0] and tile_origins(40, 64, 16) == [0]
    assert tile_origins(112, 64, 16) == [0, 48]
    window = blend_window(64, 16)
    assert window.shape == (64, 64) and window.min() > 0
    np.testing.assert_allclose(window[16:48, 16:48], 1.0)
    np.testing.assert_allclose(window, window[::-1, ::-1])
    # The ramp is a raised cosine at pixel centres: (1 - cos(π (i + ½) / overlap)) / 2.
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.array([0.5, 1.5, 2.5]) / 16)
    np.testing.assert_allclose(window[32, :3], ramp, rtol=1e-6)
    assert np.all(np.diff(window[32, :16]) > 0)


@pytest.mark.parametrize(
    ("tile", "overlap", "batch", "named"),
    [(64, 32, 1, "overlap=32"), (64, -1, 1, "overlap=-1"), (4, 0, 1, "tile_size=4"),
     (64, 8, 0, "batch_size=0")],
)  # fmt: skip
def test_bad_tiling_is_named(tile, overlap, batch, named):
    with pytest.raises(ValueError, match=named):
        check_tiling(tile, overlap, batch)


def _exact_pixels(height, width):
    """True where every window that covers the pixel reaches RADIUS pixels beyond it (or the
    window's edge is the image's edge, where both pad alike)."""
    exact = np.ones((height, width), bool)
    for top in tile_origins(height, TILE, OVERLAP):
        for left in tile_origins(width, TILE, OVERLAP):
            inside = np.zeros((height, width), bool)
            inside[top : top + TILE, left : left + TILE] = True
            good = np.zeros((height, width), bool)
            y0 = top + RADIUS if top > 0 else 0
            y1 = top + TILE - RADIUS if top + TILE < height else height
            x0 = left + RADIUS if left > 0 else 0
            x1 = left + TILE - RADIUS if left + TILE < width else width
            good[y0:y1, x0:x1] = True
            exact &= ~inside | good
    return exact


def test_tiled_equals_whole_image_away_from_window_edges_and_blending_hides_the_seams(
    local_model,
):
    image = _image()
    whole = _softmax(local_model.predict_on_batch(image[None])[0])
    tiled = predict_tiled(local_model, image, TILE, OVERLAP, batch_size=3, probabilities=True,
                          progress=False)  # fmt: skip
    # 3 window rows × 4 columns (0, 48, 96, 106), 2 batches of ≤ 3 per row.
    assert tiled["tiles"] == 12 and tiled["batches"] == 6 and tiled["skipped"] == 0
    exact = _exact_pixels(*image.shape[:2])
    assert 0.5 < exact.mean() < 1
    np.testing.assert_allclose(tiled["probabilities"][exact], whole[exact], atol=1e-5)
    np.testing.assert_array_equal(tiled["classes"][exact], whole.argmax(-1)[exact])
    # Without overlap the windows abut and their zero-padded edges differ from the whole
    # image; blended windows fade out where their edges are wrong.
    cropped = predict_tiled(local_model, image, TILE, 0, probabilities=True, progress=False)
    blended_seam = seam_error(tiled["probabilities"], whole, TILE, OVERLAP)["edges"]
    cropped_seam = seam_error(cropped["probabilities"], whole, TILE, 0)["edges"]
    assert cropped_seam > 0.05 and blended_seam < cropped_seam / 5


def test_images_smaller_than_a_window_and_nodata_areas(local_model):
    small = _image(40, 50)
    whole = local_model.predict_on_batch(small[None])[0].argmax(-1)
    result = predict_tiled(local_model, small, TILE, OVERLAP, progress=False)
    assert result["classes"].shape == (40, 50) and result["tiles"] == 1
    inner = (slice(0, 40 - RADIUS), slice(0, 50 - RADIUS))  # mirrored padding beyond
    np.testing.assert_array_equal(result["classes"][inner], whole[inner])
    image = _image()
    image[:70] = -9999.0  # no data in every band: the first window row (4) sees none
    image[100:, 120:] = -9999.0
    result = predict_tiled(local_model, image, TILE, OVERLAP, nodata=-9999.0, progress=False)
    assert result["skipped"] == 4
    assert np.all(result["classes"][:70] == NODATA_CLASS)
    assert np.all(result["classes"][100:, 120:] == NODATA_CLASS)
    assert np.all(result["classes"][70:100] < 3)


def test_geotiff_in_geotiff_out_keeps_crs_transform_and_nodata(local_model, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    image = np.clip(_image(), 1, 255).astype(np.uint8)
    image[:20, :30] = 0  # the raster's nodata value in every band
    source = tmp_path / "scene.tif"
    transform = from_origin(500000.0, 4100000.0, 10.0, 10.0)
    profile = {"driver": "GTiff", "height": 150, "width": 170, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": transform, "nodata": 0}  # fmt: skip
    with rasterio.open(source, "w", **profile) as raster:
        raster.write(np.moveaxis(image, -1, 0))
    out = tmp_path / "out" / "classes.tif"
    names = ["water", "field", "road"]
    colours = [[0, 0, 255], [0, 255, 0], [128, 128, 128]]
    result = predict_tiled(local_model, source, TILE, OVERLAP, out=out, probabilities=True,
                           class_names=names, colours=colours, progress=False)  # fmt: skip
    assert result["out"] == str(out) and result["classes"] is None
    expected = predict_tiled(local_model, image.astype(np.float32), TILE, OVERLAP, nodata=0,
                             progress=False)["classes"]  # fmt: skip
    with rasterio.open(out) as written:
        assert written.crs.to_epsg() == 32633 and written.transform == transform
        assert written.nodata == NODATA_CLASS and written.dtypes == ("uint8",)
        assert written.profile["tiled"] and written.profile["compress"] == "deflate"
        assert written.colormap(1)[1] == (0, 255, 0, 255)
        assert json.loads(written.tags(1)["classes"]) == names
        classes = written.read(1)
    np.testing.assert_array_equal(classes, expected)
    assert np.all(classes[:20, :30] == NODATA_CLASS)
    with rasterio.open(tmp_path / "out" / "classes_probabilities.tif") as probabilities:
        assert probabilities.count == 3 and probabilities.crs.to_epsg() == 32633
        total = probabilities.read().astype(int).sum(axis=0)
        assert np.all(np.abs(total[30:, 40:] - 255) <= 2)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "classes.tif",
        "classes_probabilities.tif",
    ]  # no temporary files left


def test_predict_command_writes_a_geotiff_and_names_bad_tiling(local_model, tmp_path, capsys):
    rasterio = pytest.importorskip("rasterio")
    from tfdeeplab.cli import main

    model_path = tmp_path / "local.keras"
    local_model.save(model_path)
    source = tmp_path / "plain.tif"  # no georeference: written as it came
    with rasterio.open(source, "w", driver="GTiff", height=90, width=100, count=3,
                       dtype="uint8") as raster:  # fmt: skip
        raster.write(np.moveaxis(_image(90, 100).astype(np.uint8), -1, 0))
    out = tmp_path / "plain_classes.tif"
    assert main(["predict", "--model", str(model_path), "--input", str(source), "--out",
                 str(out), "--tile", "64", "--overlap", "16"]) == 0  # fmt: skip
    assert "4 windows of 64²" in capsys.readouterr().out
    with rasterio.open(out) as written:
        assert written.shape == (90, 100) and written.crs is None
    assert main(["predict", "--model", str(model_path), "--input", str(source), "--out",
                 str(out), "--tile", "64", "--overlap", "40"]) == 2  # fmt: skip
    assert "overlap=40" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_path), "--input", str(source), "--out",
                 str(out), "--tile", "64", "--require-georeference"]) == 2  # fmt: skip
    assert "plain.tif: has no coordinate reference system" in capsys.readouterr().err
