import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# As `import tfdeeplab` does (keras imports TensorFlow first here): oneDNN kernels, which TF turns
# on by itself only on AVX-512 VNNI / AMX CPUs. tests/test_layers.py checks structurally that the
# layers need no oneDNN-only kernel.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras
import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and without layers named by earlier tests."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield


# The tiny model every export test (converters, QAT, PointRend int8) judges agreement on.
TINY_EXPORT = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 16}
EXPORT_SIZE = 64


@pytest.fixture(scope="session")
def trained_tiny():
    """DeepLabV3 (TINY_EXPORT) fitted to `cell_images`, trained once per test session; tests
    must not change its weights."""
    from tests.helpers import trained_tiny_model

    return trained_tiny_model(EXPORT_SIZE, **TINY_EXPORT)


@pytest.fixture(scope="session")
def trained_tiny_pointrend():
    """The same with a PointRend head."""
    from tests.helpers import trained_tiny_model

    return trained_tiny_model(EXPORT_SIZE, pointrend=True, **TINY_EXPORT)
