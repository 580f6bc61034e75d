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
