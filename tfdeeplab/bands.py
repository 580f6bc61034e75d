"""Models of any number of input bands (RGB + near-infrared, Sentinel-2's 13, one-band SAR)
from an RGB model, pretrained or not: `with_input_bands`.

The input's normalisation becomes a `BandNormalization` (each band standardised with its own
statistics, then given what ImageNet's pixels looked like to the pretrained first convolution),
and the first convolution's kernel gets one input slice per band:

- the R, G and B bands (`rgb_bands`) keep the pretrained kernels of their colours (a band that
  is several colours, e.g. the one band of a grey image, gets their sum: the RGB model on that
  band repeated, exactly so where the backbone's normalisation treats the colours alike);
- every other band starts at zero. That is the one choice that keeps both the pretrained
  kernels and the activations' scale exactly: at initialisation the model computes what the
  RGB model computes on the RGB bands, whatever the other bands hold, so pretrained features
  are not disturbed. The gradient of a zero slice is its band times the same upstream gradient
  the RGB slices get, so the extra bands start learning at once (timm's mean-and-rescale of
  the RGB kernels, the alternative, changes every activation by (C − 3)/3 of a mean kernel's
  response and the RGB kernels' scale with it).

Every other weight is copied unchanged; the network is rebuilt from its config, so this works
for every backbone, imported torchvision models and PointRend (whose point head reads every
band's pixels: as 8-bit values scaled to [-1, 1], or standardised to about ±1 at two standard
deviations when the statistics are measured, `pixel_scale`/`pixel_offset`).
"""

import copy

import keras
import numpy as np

from tfdeeplab.layers.image_normalization import (
    BandNormalization,
    NormalizationMode,
    band_statistics,
    check_rgb_bands,
)


def _rewrite(config, bands, rgb_bands, mean, std, found, measured):
    """Walks a serialized model config, changing the image inputs, the normalisation, the
    padding colour and (with `measured` statistics, not 8-bit) PointRend's pixel scaling for
    `bands` bands. `found` collects the normalisation modes seen."""
    if isinstance(config, list):
        for item in config:
            _rewrite(item, bands, rgb_bands, mean, std, found, measured)
        return
    if not isinstance(config, dict):
        return
    # Layers are built again when the rebuilt graph calls them, on the new input's bands.
    config.pop("build_config", None)
    name = config.get("class_name")
    inner = config.get("config")
    if name == "InputLayer" and len(inner["batch_shape"]) == 4 and inner["batch_shape"][-1] == 3:
        inner["batch_shape"] = [*inner["batch_shape"][:3], bands]
    elif name == "ImageNormalization":
        found.append(NormalizationMode(inner["mode"]))
        layer = BandNormalization(
            inner["mode"], bands, rgb_bands, list(mean), list(std), name=inner["name"]
        )
        config.update(keras.saving.serialize_keras_object(layer))
    elif name == "BandNormalization":
        raise ValueError(f"the model already takes {inner['bands']} bands")
    elif name == "AlignedPadding":
        inner["value"] = [float(v) for v in mean]
    elif name == "PointRendRefiner" and inner.get("image_features") and measured:
        inner["pixel_scale"] = [float(v) for v in 1 / (2 * std)]
        inner["pixel_offset"] = [float(v) for v in -mean / (2 * std)]
    for value in config.values():
        _rewrite(value, bands, rgb_bands, mean, std, found, measured)


def _first_kernel(old, bands, rgb_bands, mode):
    """The first convolution's (kh, kw, bands, F) kernel from its RGB one (see the module
    docstring). Caffe-mode backbones saw BGR: their input channel j is colour 2 − j."""
    kernel = np.zeros((*old.shape[:2], bands, old.shape[3]), old.dtype)
    for colour, band in enumerate(rgb_bands):
        channel = 2 - colour if mode is NormalizationMode.CAFFE else colour
        kernel[:, :, band] += old[:, :, channel]
    return kernel


def with_input_bands(model, bands, rgb_bands=None, band_mean=None, band_std=None):
    """The same network taking `bands` input bands, with `model`'s weights (see the module
    docstring).

    Args:
        model: a tfdeeplab model taking RGB (`DeepLabV3`, `from_torchvision`, a loaded one).
        bands: number of input bands, ≥ 1.
        rgb_bands: the input bands that are R, G, B; default (0, 1, 2), or (0, 0, 0) for one
            or two bands.
        band_mean, band_std: per-band statistics of the training data in the input's own units
            (any bit depth); None: 8-bit imagery (ImageNet's pixel statistics).

    Returns:
        A new, uncompiled model of the same class, input (B, H, W, bands).
    """
    if isinstance(bands, bool) or int(bands) != bands or bands < 1:
        raise ValueError(f"bands={bands!r} must be an integer ≥ 1")
    bands = int(bands)
    rgb_bands = check_rgb_bands(rgb_bands, bands)
    mean, std = band_statistics(bands, rgb_bands, band_mean, band_std)
    config = copy.deepcopy(keras.saving.serialize_keras_object(model))
    modes = []
    _rewrite(config, bands, rgb_bands, mean, std, modes, band_mean is not None)
    if len(modes) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(modes)} ImageNormalization layers; expected the "
            "one at the input of a tfdeeplab backbone"
        )
    rebuilt = keras.saving.deserialize_keras_object(config)
    _copy_weights(model, rebuilt, bands, rgb_bands, modes[0])
    return rebuilt


def _point_head_kernel(old, bands, rgb_bands, num_classes):
    """PointRend's first dense kernel, rows [fine features, 3 pixel rows (RGB), coarse logits],
    with one pixel row per band: the R, G, B rows at their bands, zeros for the others."""
    pixels = old.shape[0] - num_classes - 3
    rows = np.zeros((bands, old.shape[1]), old.dtype)
    for colour, band in enumerate(rgb_bands):
        rows[band] += old[pixels + colour]
    return np.concatenate([old[:pixels], rows, old[pixels + 3 :]])


def _reads_pixels(model):
    """Whether `model`'s PointRend head reads the image's pixels (its first kernel has rows
    for them)."""
    refiners = [layer for layer in model.layers if layer.name == "pointrend"]
    return bool(refiners) and bool(getattr(refiners[0], "image_features", False))


def _copy_weights(model, rebuilt, bands, rgb_bands, mode):
    """Every weight of `model` into `rebuilt`; the first convolution's kernel (the one kernel
    that reads 3 channels) laid out for the bands even where their count stays 3 (its RGB or
    BGR order then becomes the bands' order), PointRend's pixel rows likewise."""
    first = [
        v.path
        for v in model.weights
        if len(v.shape) == 4 and v.shape[2] == 3 and "kernel" in v.path
    ]
    if len(first) != 1:
        raise ValueError(f"expected one convolution reading the 3 image channels, found {first}")
    old = {v.path: v for v in model.weights}
    for variable in rebuilt.weights:
        value = old[variable.path].numpy()
        if variable.path == first[0]:
            value = _first_kernel(value, bands, rgb_bands, mode)
        elif variable.path.endswith("point_head/fc0/kernel") and _reads_pixels(model):
            value = _point_head_kernel(value, bands, rgb_bands, model.output_shape[-1])
        if value.shape != tuple(variable.shape):
            raise ValueError(
                f"{variable.path}: shape {value.shape} → {tuple(variable.shape)} is not a first "
                "convolution's input channels"
            )
        variable.assign(value)
