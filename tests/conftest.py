import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# As `tfdeeplab train` does: oneDNN kernels, which TF turns on by itself only on AVX-512 VNNI /
# AMX CPUs and which train 6x faster on AVX2 ones (keras imports TensorFlow first here; subprocess
# tests inherit the variable). tests/test_layers.py checks structurally that the layers need no
# oneDNN-only kernel.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (full demo, multi-worker, full-width backbones, "
        "QAT fine-tuning); `-m slow --run-slow` runs only them",
    )


# Fixtures that train or export something once per session or module. Under pytest-xdist
# (`--dist loadgroup`) the tests that use one run on one worker, so it is built once per run
# rather than once per worker.
SESSION_SHARED = ("trained_tiny", "trained_tiny_pointrend")
MODULE_SHARED = ("artifacts", "demo", "exported", "mobilenetv2_129", "scenes")


def _xdist_group(item):
    for name in SESSION_SHARED:
        if name in item.fixturenames:
            return name
    for name in MODULE_SHARED:
        if name in item.fixturenames:
            return f"{item.path.stem}:{name}"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Groups the users of a shared fixture for xdist. Without --run-slow, tests marked slow
    are deselected (not skipped: they are a separate set that CI runs on its own, not tests
    that could not run here)."""
    for item in items:
        group = _xdist_group(item)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
    if config.getoption("--run-slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_configure(config):
    """An xdist worker gives TensorFlow its share of the cores: two workers with two threads
    each on 2 cores ran the default set in 8.2 min, with one thread each in 7.2 (same code, one
    machine). Tests that need their own threading run in subprocesses, which start afresh."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import tensorflow as tf

        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's default): one worker per core, at most 4. The tests are mostly
    single-threaded Python (Keras tracing, conversion); each worker holds its own TensorFlow
    (about 2 GB), so more workers on a large machine would buy memory pressure, not speed."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_report_header(config):
    if not config.getoption("--run-slow"):
        return "slow tests deselected; add --run-slow to run them too"
    return None


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and without layers named by earlier tests."""
    # free_memory=False: its gc.collect() took 0.3-0.7 s per test (the heap grows with every
    # model a session builds), over a minute of the default run; Python's own gc still runs.
    keras.backend.clear_session(free_memory=False)
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


@pytest.fixture(scope="session")
def built_backbone():
    """`get_backbone(name, output_stride, **TINY_KWARGS[name])`, built once per session for the
    tests that only read it (shapes, LiteRT conversion); tests must not change its weights."""
    import functools

    from tests.helpers import TINY_KWARGS
    from tfdeeplab import get_backbone

    @functools.cache
    def build(name, output_stride):
        return get_backbone(name, output_stride, **TINY_KWARGS[name])

    return build
