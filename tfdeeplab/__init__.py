"""tfdeeplab: DeepLabV3 semantic segmentation for TensorFlow / Keras 3 that exports cleanly.

`import tfdeeplab` imports Keras (on TensorFlow) and registers every serializable class, so
`keras.saving.load_model` restores trained models (their loss, metrics and learning-rate
schedule included). It sets no TensorFlow option: see README, "oneDNN".
"""

import importlib
import sys
from pathlib import Path

__version__ = "0.1.0"

_NAMES = {
    "BACKBONES": "backbones",
    "get_backbone": "backbones",
    "DeepLabV3": "deeplabv3",
    "from_torchvision": "torchvision_port",
    "predict_tiled": "raster_predict",
}
_SUBMODULES = ("layers", "losses", "metrics", "schedules", "backbones", "deeplabv3")

__all__ = [
    "BACKBONES",
    "DeepLabV3",
    "__version__",
    "from_torchvision",
    "get_backbone",
    "predict_tiled",
]


def register_serializables():
    """Imports Keras and every module whose classes `keras.saving.load_model` must find.

    Keras 3 must run on TensorFlow (Keras' default backend): the layers call TensorFlow ops so
    that they convert to TFLite. Another backend chosen by KERAS_BACKEND or ~/.keras/keras.json
    is an ImportError that says so."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "tfdeeplab needs Keras' TensorFlow backend; KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Unset it or set KERAS_BACKEND=tensorflow."
        )
    for name in _SUBMODULES:
        importlib.import_module(f"tfdeeplab.{name}")


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"tfdeeplab.{_NAMES[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfdeeplab.{name}")
    raise AttributeError(f"module 'tfdeeplab' has no attribute {name!r}")


def _is_the_command_line_program():
    """The `tfdeeplab` command (console script or `python -m tfdeeplab.cli`) chooses
    TensorFlow's start-up options from its arguments (tfdeeplab.cli.tensorflow_environment),
    which TensorFlow reads only once, when it is first imported: there the package leaves the
    import of Keras and TensorFlow to the command."""
    return Path(sys.argv[0]).name == "tfdeeplab" or sys.orig_argv[1:3] == ["-m", "tfdeeplab.cli"]


if not _is_the_command_line_program():
    register_serializables()
