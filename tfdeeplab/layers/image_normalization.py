"""Per-backbone input normalisation inside the model: exported graphs take RGB in [0, 255]."""

import enum

import keras
import numpy as np


class NormalizationMode(str, enum.Enum):
    """The `preprocess_input` conventions of keras.applications.

    CAFFE: RGB → BGR, then subtract the ImageNet BGR mean (ResNet, VGG).
    TF: scale to [-1, 1] (MobileNetV2, Xception).
    TORCH: scale to [0, 1], subtract the ImageNet mean, divide by its std (DenseNet).
    """

    CAFFE = "caffe"
    TF = "tf"
    TORCH = "torch"


_IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225])
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _affine(mode):
    """(scale, offset) per channel such that normalised = x * scale + offset."""
    if mode is NormalizationMode.CAFFE:
        return np.ones(3), -_CAFFE_MEAN_BGR
    if mode is NormalizationMode.TF:
        return np.full(3, 1 / 127.5), np.full(3, -1.0)
    return 1 / (255 * _IMAGENET_STD_RGB), -_IMAGENET_MEAN_RGB / _IMAGENET_STD_RGB


def bgr_kernel(scale):
    """(1, 1, 3, 3) float32 kernel of RGB → BGR times `scale` (per output channel) as a 1×1
    convolution: output channel j = input channel 2 - j, times scale[j]."""
    kernel = np.zeros((1, 1, 3, 3), "float32")
    for channel in range(3):
        kernel[0, 0, 2 - channel, channel] = scale[channel]
    return kernel


@keras.saving.register_keras_serializable(package="tfdeeplab")
class ImageNormalization(keras.layers.Layer):
    """Maps float RGB images in [0, 255] to what a keras.applications backbone expects.

    Args:
        mode: a `NormalizationMode` or its value ("caffe", "tf", "torch").

    Input (B, H, W, 3) float RGB in [0, 255]; output (B, H, W, 3) in the backbone's convention.
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        try:
            self.mode = NormalizationMode(mode)
        except ValueError:
            allowed = ", ".join(m.value for m in NormalizationMode)
            raise ValueError(f"mode={mode!r} is unknown; choose one of: {allowed}") from None
        scale, offset = _affine(self.mode)
        self.scale = scale.astype("float32")
        self.offset = offset.astype("float32")

    def call(self, images):
        offset = keras.ops.cast(self.offset, images.dtype)
        if self.mode is NormalizationMode.CAFFE:
            # RGB → BGR as a 1×1 convolution with a permutation kernel (exact: one product by 1
            # per output), not a flip: TFLite's REVERSE_V2 has no XNNPACK kernel in int8 and
            # float16 files and split them in two delegate partitions; CONV_2D runs in XNNPACK.
            kernel = keras.ops.cast(bgr_kernel(self.scale), images.dtype)
            return keras.ops.conv(images, kernel) + offset
        return images * keras.ops.cast(self.scale, images.dtype) + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode.value}


# ImageNet's pixel statistics in [0, 255] RGB: what pretrained RGB kernels were trained on.
IMAGENET_PIXEL_MEAN = 255 * _IMAGENET_MEAN_RGB
IMAGENET_PIXEL_STD = 255 * _IMAGENET_STD_RGB


def _rgb_targets(mode):
    """(mean, std) per R, G, B of what the backbone's first convolution saw in pretraining:
    ImageNet's pixel statistics through `mode`'s affine map, in RGB order."""
    scale, offset = _affine(mode)
    if mode is NormalizationMode.CAFFE:  # _affine's caffe values are in BGR order
        scale, offset = scale[::-1], offset[::-1]
    return IMAGENET_PIXEL_MEAN * scale + offset, IMAGENET_PIXEL_STD * scale


def default_rgb_bands(bands):
    """Which input bands are R, G, B by default: (0, 1, 2), or (0, 0, 0) for fewer than 3
    bands (one band read as grey)."""
    return (0, 1, 2) if bands >= 3 else (0, 0, 0)


def band_statistics(bands, rgb_bands, band_mean=None, band_std=None):
    """(mean, std) per band, float64: the given ones, else ImageNet's pixel statistics for the
    bands that are R, G or B (averaged where one band is several) and their average for the
    others (8-bit imagery, as an RGB band would be)."""
    if band_mean is not None and band_std is not None:
        mean, std = np.asarray(band_mean, np.float64), np.asarray(band_std, np.float64)
        if mean.shape != (bands,) or std.shape != (bands,) or np.any(std <= 0):
            raise ValueError(
                f"band_mean={list(band_mean)} and band_std={list(band_std)} must give one value "
                f"per band ({bands}), std > 0"
            )
        return mean, std
    return _per_band(IMAGENET_PIXEL_MEAN, bands, rgb_bands), _per_band(
        IMAGENET_PIXEL_STD, bands, rgb_bands
    )


def _per_band(colour_values, bands, rgb_bands):
    """One value per band from one per colour (R, G, B): a band's colours' mean, or the mean of
    all three for bands that are no colour."""
    values = np.full(bands, np.mean(colour_values))
    for band in set(rgb_bands):
        values[band] = np.mean([colour_values[k] for k, b in enumerate(rgb_bands) if b == band])
    return values


def check_rgb_bands(rgb_bands, bands):
    rgb_bands = tuple(default_rgb_bands(bands) if rgb_bands is None else rgb_bands)
    if len(rgb_bands) != 3 or any(int(b) != b or not 0 <= b < bands for b in rgb_bands):
        raise ValueError(
            f"rgb_bands={rgb_bands!r} must name 3 input bands (R, G, B), each in 0..{bands - 1}"
        )
    return tuple(int(b) for b in rgb_bands)


@keras.saving.register_keras_serializable(package="tfdeeplab")
class BandNormalization(keras.layers.Layer):
    """Maps images of any number of bands (8-bit, 16-bit or float) to what a backbone
    pretrained on RGB expects: each band is standardised with its own statistics, then given
    the mean and std that ImageNet's pixels have after the backbone's `preprocess_input`
    (`mode`): the R, G and B bands (`rgb_bands`) those of their colour, the other bands the
    average of the three. One multiply-add per band; the bands keep their input order (the
    first convolution's kernel is laid out to match: `tfdeeplab.bands`).

    Args:
        mode: the backbone's `NormalizationMode`.
        band_mean, band_std: per band, from the training data (`tfdeeplab train` measures
            them); None: 8-bit imagery with ImageNet's statistics (`band_statistics`).
        rgb_bands: the input bands that are R, G, B (default `default_rgb_bands`).
        bands: the number of input bands.

    Input (B, H, W, bands) float; output the same shape.
    """

    def __init__(self, mode, bands, rgb_bands=None, band_mean=None, band_std=None, **kwargs):
        super().__init__(**kwargs)
        self.mode = NormalizationMode(mode)
        self.bands = int(bands)
        self.rgb_bands = check_rgb_bands(rgb_bands, self.bands)
        self.band_mean, self.band_std = (
            None if v is None else [float(x) for x in v] for v in (band_mean, band_std)
        )
        mean, std = band_statistics(self.bands, self.rgb_bands, band_mean, band_std)
        target_mean, target_std = _rgb_targets(self.mode)
        want_mean = _per_band(target_mean, self.bands, self.rgb_bands)
        want_std = _per_band(target_std, self.bands, self.rgb_bands)
        self.scale = (want_std / std).astype("float32")
        self.offset = (want_mean - mean * want_std / std).astype("float32")

    def call(self, images):
        scale = keras.ops.cast(self.scale, images.dtype)
        return images * scale + keras.ops.cast(self.offset, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode.value,
            "bands": self.bands,
            "rgb_bands": list(self.rgb_bands),
            "band_mean": self.band_mean,
            "band_std": self.band_std,
        }
