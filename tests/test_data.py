import json
import warnings

import numpy as np
import pytest
from PIL import Image

from tfdeeplab.config import TrainConfig
from tfdeeplab.data import (
    Augmentation,
    DataError,
    load_segmentation_folder,
    make_dataset,
    scan_folder,
    scan_split,
    synthetic_scenes,
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return synthetic_scenes(tmp_path_factory.mktemp("scenes"), 12, (48, 40), 5, seed=3)


def _copy(root, tmp_path, count=4):
    """A writable copy of the first `count` pairs of a folder."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((root / sub).iterdir())[:count]:
            (tmp_path / sub / path.name).write_bytes(path.read_bytes())
    return tmp_path


def test_synthetic_scenes_are_deterministic_and_varied(scenes, tmp_path):
    again = synthetic_scenes(tmp_path, 12, (48, 40), 5, seed=3)
    for name in ("images/scene_00000.png", "masks/scene_00011.png", "classes.json"):
        assert (again / name).read_bytes() == (scenes / name).read_bytes()
    other = synthetic_scenes(tmp_path / "other", 1, (48, 40), 5, seed=4)
    assert (other / "images/scene_00000.png").read_bytes() != (
        scenes / "images/scene_00000.png"
    ).read_bytes()
    classes = json.loads((scenes / "classes.json").read_text())
    assert classes["names"][0] == "background" and len(classes["colors"]) == 5
    masks = [np.asarray(Image.open(p)) for p in sorted((scenes / "masks").iterdir())]
    assert Image.open(scenes / "masks/scene_00000.png").mode == "P"
    assert set(np.unique(np.stack(masks))) == set(range(5))
    areas = [np.mean(m > 0) for m in masks]
    assert min(areas) < 0.1 < max(areas)


def test_pipeline_gives_float_images_and_int_masks(scenes):
    dataset = load_segmentation_folder(scenes, image_size=(32, 24), batch_size=4)
    images, masks = next(iter(dataset))
    assert images.shape == (4, 32, 24, 3) and images.dtype == "float32"
    assert masks.shape == (4, 32, 24) and masks.dtype == "int32"
    assert 0 <= float(np.min(images)) and float(np.max(images)) <= 255
    # Nearest-neighbour resizing keeps class indices: no interpolated labels appear.
    assert set(np.unique(masks)) <= set(range(5)) | {255}


def test_evaluation_view_is_deterministic_and_pads_with_the_ignore_label(scenes):
    dataset = load_segmentation_folder(scenes, (64, 64), 4, augment=False, shuffle=False)
    first = [m.numpy() for _, m in dataset]
    second = [m.numpy() for _, m in dataset]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # Original resolution: the 48×40 masks as they are, padded to the 64×64 canvas.
    assert np.all(first[0][:, 48:] == 255) and np.all(first[0][:, :, 40:] == 255)
    assert np.all(first[0][:, :48, :40] != 255)
    assert sum(len(m) for m in first) == 12
    original = np.asarray(Image.open(sorted((scenes / "masks").iterdir())[0]))
    np.testing.assert_array_equal(first[0][0, :48, :40], original)
    resized = load_segmentation_folder(
        scenes, (64, 64), 4, augment=False, shuffle=False, eval_view="resize"
    )
    masks = next(iter(resized))[1].numpy()
    # Resized: the longer side becomes 64, the other round(53.3) = 53; then padding.
    assert np.all(masks[:, :, 53:] == 255) and np.all(masks[:, :, :53] != 255)
    # Images larger than the crop set the canvas: nothing is ever shrunk.
    small = load_segmentation_folder(scenes, (32, 32), 4, augment=False, shuffle=False)
    assert next(iter(small))[1].shape == (4, 48, 40)


def test_labels_folder_and_split_folders(scenes, tmp_path):
    root = _copy(scenes, tmp_path / "labels_layout")
    (root / "masks").rename(root / "labels")
    assert len(scan_folder(root)) == 4
    for split in ("train", "val"):
        _copy(scenes, tmp_path / "splits" / split, 3 if split == "train" else 2)
    assert len(scan_split(tmp_path / "splits", "train")) == 3
    assert len(scan_split(tmp_path / "splits", "val")) == 2
    with pytest.raises(ValueError, match="pass split='train' or 'val'"):
        scan_split(tmp_path / "splits")


def test_fraction_split_is_fixed_and_disjoint(scenes):
    train = scan_split(scenes, "train", val_fraction=0.25, seed=7)
    val = scan_split(scenes, "val", val_fraction=0.25, seed=7)
    assert len(val) == 3 and len(train) == 9
    assert not set(train.images) & set(val.images)
    assert scan_split(scenes, "val", val_fraction=0.25, seed=7).images == val.images
    with pytest.raises(ValueError, match="split='test' is unknown; choose one of: train, val"):
        scan_split(scenes, "test")


def test_gray_rgba_and_tiff_images_become_rgb(scenes, tmp_path):
    root = _copy(scenes, tmp_path, 3)
    names = sorted(p.stem for p in (root / "images").iterdir())
    rgb = np.asarray(Image.open(root / "images" / f"{names[0]}.png"))
    Image.fromarray(rgb).convert("L").save(root / "images" / f"{names[0]}.png")
    Image.fromarray(rgb).convert("RGBA").save(root / "images" / f"{names[1]}.png")
    (root / "images" / f"{names[2]}.png").unlink()
    Image.fromarray(rgb).save(root / "images" / f"{names[2]}.tif")
    dataset = load_segmentation_folder(root, (48, 40), 3, augment=False, shuffle=False)
    images, _ = next(iter(dataset))
    assert images.shape == (3, 48, 40, 3)
    np.testing.assert_allclose(images[2], rgb, atol=1e-3)  # TIFF read by PIL, same pixels


def _break(root, case):
    """Introduces one kind of bad data into a copied folder; returns the file to be named."""
    images = sorted((root / "images").iterdir())
    masks = sorted((root / "masks").iterdir())
    if case == "corrupt image":
        images[1].write_bytes(b"not a png at all")
        return images[1]
    if case == "image without mask":
        masks[1].unlink()
        return images[1]
    if case == "mask of another size":
        Image.open(masks[1]).resize((10, 10)).save(masks[1])
        return masks[1]
    if case == "label too large":
        labels = np.asarray(Image.open(masks[1])).copy()
        labels[0, 0] = 9
        Image.fromarray(labels, "L").save(masks[1])
        return masks[1]
    if case == "RGB mask":
        Image.open(masks[1]).convert("RGB").save(masks[1])
        return masks[1]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, message",
    [
        ("corrupt image", "unreadable or corrupt image"),
        ("image without mask", "no mask with the same name"),
        ("mask of another size", "is 10×10, image is 40×48"),
        ("label too large", r"has labels \[9\] ≥ num_classes=5"),
        ("RGB mask", "has mode RGB; masks must be 8-bit grayscale"),
    ],
)
def test_bad_data_names_the_file_or_is_skipped_with_a_warning(scenes, tmp_path, case, message):
    root = _copy(scenes, tmp_path)
    culprit = _break(root, case)
    with pytest.raises(DataError, match=message) as error:
        load_segmentation_folder(root, num_classes=5)
    assert culprit.name in str(error.value)
    with pytest.warns(UserWarning, match="skipped 1 bad pairs") as caught:
        dataset = load_segmentation_folder(
            root, (32, 32), 8, augment=False, num_classes=5, skip_bad=True
        )
    assert culprit.name in str(caught[0].message)
    assert len(next(iter(dataset))[0]) == 3


def test_empty_and_missing_folders_are_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"no images .* the folder is empty"):
        scan_folder(tmp_path)
    with pytest.raises(DataError, match="no such data folder"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "masks").rmdir()
    with pytest.raises(DataError, match="no masks folder; expected one of: masks, labels"):
        scan_folder(tmp_path)


def test_validation_happens_once_when_the_dataset_is_built(scenes, tmp_path):
    root = _copy(scenes, tmp_path)
    dataset = load_segmentation_folder(root, (32, 32), 2, augment=False, shuffle=False)
    # Breaking a file afterwards is not re-checked per step (it fails only when decoded).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _break(root, "label too large")
        assert len(list(dataset)) == 2


def test_cached_pipeline_reshuffles_every_epoch_and_decodes_the_same(scenes):
    def epoch_orders(dataset, epochs):
        iterator = iter(dataset)
        # One image per element; its mean colour identifies the scene.
        order = [round(float(np.mean(next(iterator)[0])), 3) for _ in range(12 * epochs)]
        return [order[i * 12 : (i + 1) * 12] for i in range(epochs)]

    kwargs = {"image_size": (48, 40), "batch_size": 1, "augment": False, "seed": 5}
    cached = load_segmentation_folder(scenes, cache=True, **kwargs).repeat()
    orders = epoch_orders(cached, 3)
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2])
    assert orders[0] != orders[1] and orders[1] != orders[2]
    plain = load_segmentation_folder(scenes, shuffle=False, **kwargs)
    cached_plain = load_segmentation_folder(scenes, shuffle=False, cache=True, **kwargs)
    for _ in range(2):  # the second pass reads the cache
        for (a, m), (b, n) in zip(plain, cached_plain, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(m, n)


def test_fit_view_pads_what_fits_and_resizes_with_a_warning_what_does_not(scenes):
    kwargs = {"batch_size": 4, "augment": False, "shuffle": False, "eval_view": "fit"}
    fitting = load_segmentation_folder(scenes, (64, 64), **kwargs)
    np.testing.assert_array_equal(
        next(iter(fitting))[1].numpy()[0, :48, :40],
        np.asarray(Image.open(sorted((scenes / "masks").iterdir())[0])),
    )
    with pytest.warns(UserWarning, match=r"images up to 48×40 do not fit the 32×32 input"):
        smaller = load_segmentation_folder(scenes, (32, 32), **kwargs)
    assert next(iter(smaller))[1].shape == (4, 32, 32)


def test_the_scale_range_of_training_views_is_a_setting(scenes):
    """At scale 1 a 48×40 scene cropped to 48×40 is the scene (or its mirror); at scale 0.5
    it fills a quarter of the crop and the rest is ignored padding."""
    folder = scan_folder(scenes)
    masks = [np.asarray(Image.open(p)) for p in folder.masks]
    kwargs = {"batch_size": 12, "shuffle": False, "seed": 0}
    for scale, padded in ((1.0, 0.0), (0.5, 0.75)):
        settings = Augmentation(min_scale=scale, max_scale=scale)
        views = next(iter(make_dataset(folder, (48, 40), augmentation=settings, **kwargs)))[1]
        views = np.asarray(views)
        np.testing.assert_allclose(np.mean(views == 255), padded)
        if scale == 1.0:
            for view, mask in zip(views, masks, strict=True):
                assert np.array_equal(view, mask) or np.array_equal(view, mask[:, ::-1])
    with pytest.raises(ValueError, match=r"min_scale=2\.0 and max_scale=1\.0"):
        TrainConfig(data="d", out="o", min_scale=2.0, max_scale=1.0)


def test_prediction_rows_spread_over_the_split_and_leave_out_the_padding(scenes):
    from tfdeeplab.inference import prediction_rows

    folder = scan_folder(scenes)
    dataset = make_dataset(folder, (64, 64), 5, augment=False, shuffle=False)

    def model(images, training=False):  # one-hot of the red channel's parity, 5 classes
        return np.eye(5, dtype=np.float32)[np.asarray(images)[..., 0].astype(int) % 5]

    model.layers = []
    rows = prediction_rows(model, dataset, folder, count=3)
    # Images 0, 6 and 11 of 12 (batches of 5: the first, second and third batch).
    originals = [np.asarray(Image.open(folder.images[i]).convert("RGB")) for i in (0, 6, 11)]
    assert len(rows) == 3
    for (image, truth, prediction), original in zip(rows, originals, strict=True):
        assert image.shape == truth.shape == prediction.shape == (48, 40, 3)
        np.testing.assert_array_equal(image, original)
        colours = np.asarray(folder.colours, np.uint8)
        np.testing.assert_array_equal(prediction, colours[original[..., 0].astype(int) % 5])
