"""Export of tfdeeplab models: TFLite conversion and LiteRT inspection."""

from converters.litert import LiteRTModel
from converters.tflite import convert_to_tflite

__all__ = ["LiteRTModel", "convert_to_tflite"]
