"""tfdeeplab: DeepLabV3 semantic segmentation for TensorFlow / Keras 3 that exports cleanly."""

import os

# Keras 3 must run on TensorFlow: the layers call TensorFlow ops so that they convert to TFLite.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI / AMX. Without it, the Eigen
# kernels train MobileNetV2 OS16 + PointRend at 256² far slower on an AVX2 CPU (2 cores, batch 8:
# 27.3 s/step vs 4.6 s/step with oneDNN, measured). Takes effect only if TensorFlow is not
# imported yet; set TF_ENABLE_ONEDNN_OPTS=0 to opt out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"tfdeeplab needs Keras' TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}. "
        "Unset it or set KERAS_BACKEND=tensorflow."
    )

# Importing these registers every serializable class, so `keras.saving.load_model` restores
# trained models (their loss, metrics and learning-rate schedule included) after `import tfdeeplab`.
from tfdeeplab import layers, losses, metrics, schedules  # noqa: F401
from tfdeeplab.backbones import BACKBONES, get_backbone
from tfdeeplab.deeplabv3 import DeepLabV3

__version__ = "0.1.0"

__all__ = ["BACKBONES", "DeepLabV3", "__version__", "get_backbone"]
