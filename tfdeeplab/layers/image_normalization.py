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
            kernel = keras.ops.cast(self._bgr_kernel(), images.dtype)
            return keras.ops.conv(images, kernel) + offset
        return images * keras.ops.cast(self.scale, images.dtype) + offset

    def _bgr_kernel(self):
        """(1, 1, 3, 3) kernel: output channel j = input channel 2 - j, times scale[j]."""
        kernel = np.zeros((1, 1, 3, 3), "float32")
        for channel in range(3):
            kernel[0, 0, 2 - channel, channel] = self.scale[channel]
        return kernel

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode.value}
