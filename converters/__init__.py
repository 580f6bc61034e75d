"""Export of tfdeeplab models: SavedModel for serving, TFLite for phones (fp32, float16,
dynamic-range, full-integer int8 and quantization-aware trained), each verified against Keras.
"""

from converters.calibration import calibration_dataset, representative_images
from converters.litert import LiteRTModel
from converters.options import IOType, Output, Quantization
from converters.qat import QATOptions, quantization_aware_training
from converters.saved_model import export_saved_model
from converters.tf_keras_bridge import to_tf_keras
from converters.tflite import convert_to_tflite, export_tflite
from converters.verify import VerificationFailed, VerificationReport, verify

__all__ = [
    "IOType",
    "LiteRTModel",
    "Output",
    "QATOptions",
    "Quantization",
    "VerificationFailed",
    "VerificationReport",
    "calibration_dataset",
    "convert_to_tflite",
    "export_saved_model",
    "export_tflite",
    "quantization_aware_training",
    "representative_images",
    "to_tf_keras",
    "verify",
]
