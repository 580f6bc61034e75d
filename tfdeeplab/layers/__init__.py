"""Keras layers of tfdeeplab; every one converts to TFLite builtins and to SavedModel."""

from tfdeeplab.layers.aspp import ASPP
from tfdeeplab.layers.atrous import AtrousConv2D, AtrousDepthwiseConv2D, AtrousSeparableConv2D
from tfdeeplab.layers.auxiliary_head import AuxiliaryHead
from tfdeeplab.layers.fused_batch_norm import FusedBatchNormalization
from tfdeeplab.layers.image_normalization import (
    BandNormalization,
    ImageNormalization,
    NormalizationMode,
)
from tfdeeplab.layers.resize_like import AlignedPadding, CropLike, ResizeLike

__all__ = [
    "ASPP",
    "AlignedPadding",
    "AtrousConv2D",
    "AtrousDepthwiseConv2D",
    "AtrousSeparableConv2D",
    "AuxiliaryHead",
    "BandNormalization",
    "CropLike",
    "FusedBatchNormalization",
    "ImageNormalization",
    "NormalizationMode",
    "ResizeLike",
]
