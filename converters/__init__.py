"""Export of tfdeeplab models: SavedModel for serving, TFLite for phones (fp32, float16,
dynamic-range, full-integer int8 and quantization-aware trained), each verified against Keras.

Names are imported on first use, so `from converters.litert import LiteRTModel` (running TFLite
files) does not load TensorFlow.
"""

import importlib

_SOURCES = {
    "calibration_dataset": "calibration",
    "ExportData": "calibration",
    "representative_images": "calibration",
    "LiteRTModel": "litert",
    "IOType": "options",
    "Output": "options",
    "Quantization": "options",
    "QATOptions": "qat",
    "quantization_aware_training": "qat",
    "export_saved_model": "saved_model",
    "to_tf_keras": "tf_keras_bridge",
    "convert_to_tflite": "tflite",
    "export_tflite": "tflite",
    "tflite_converter": "tflite",
    "VerificationFailed": "verify",
    "VerificationReport": "verify",
    "verify": "verify",
}

__all__ = sorted(_SOURCES)


def __getattr__(name):
    if name not in _SOURCES:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"converters.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_SOURCES])
