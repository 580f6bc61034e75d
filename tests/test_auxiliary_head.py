"""The auxiliary FCN head (torchvision's aux_loss): trained with a weighted loss, absent from
inference, from the SavedModel and from TFLite."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from converters import LiteRTModel, convert_to_tflite, export_saved_model
from tests.helpers import images
from tfdeeplab import DeepLabV3, get_backbone
from tfdeeplab.losses import SegmentationLoss

TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 8}
SIZE = 33


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    model = DeepLabV3(3, aux_head=True, **TINY)
    model.compile(keras.optimizers.SGD(0.01), SegmentationLoss(3))
    return model


def _labels(count=2):
    return np.random.default_rng(0).integers(0, 3, (count, SIZE, SIZE)).astype("int32")


def test_mid_features_end_the_stage_before_the_last_at_stride_16():
    for output_stride, cells in ((16, 3), (8, 5)):
        maps = get_backbone("mobilenetv2", output_stride, alpha=0.35, mid=True)(images(1, 33, 33))
        assert maps["mid"].shape == (1, cells, cells, 32)  # block_12_add: 96 · 0.35 → 32
    assert "mid" not in get_backbone("mobilenetv2", alpha=0.35).output


def test_training_adds_the_weighted_auxiliary_loss(model):
    x, y = images(2, SIZE, SIZE), _labels()
    outputs = model(x, training=True)
    assert set(outputs) == {"logits", "aux_logits"}
    assert outputs["aux_logits"].shape == (2, SIZE, SIZE, 3)
    loss = SegmentationLoss(3)
    expected = loss(y, outputs["logits"]) + 0.4 * loss(y, outputs["aux_logits"])
    got = model.compute_loss(x, y, outputs, training=True)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)
    assert float(loss(y, outputs["aux_logits"])) > 0.1  # not a term that vanishes


def test_inference_ignores_the_head(model):
    x = images(2, SIZE, SIZE)
    plain = DeepLabV3(3, **TINY)
    plain.set_weights(model.inference_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)
    # The 3×3 kernel, BN (4), the classifier kernel and bias.
    assert len(model.weights) - len(model.inference_weights()) == 7
    assert len(plain.weights) == len(model.inference_weights())


def test_fit_trains_the_head_and_the_model_saves_and_loads(model, tmp_path):
    head = model.get_layer("aux_head")
    before = head.classifier.kernel.numpy().copy()
    model.fit(images(4, SIZE, SIZE), _labels(4), batch_size=2, epochs=1, verbose=0)
    assert not np.allclose(head.classifier.kernel.numpy(), before)
    path = tmp_path / "aux.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.get_layer("aux_head").classifier.kernel.numpy(), head.classifier.kernel.numpy()
    )
    x = images(1, SIZE, SIZE)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_exports_hold_none_of_the_head(model, tmp_path):
    x = images(1, SIZE, SIZE)
    litert = LiteRTModel(convert_to_tflite(model, (1, SIZE, SIZE, 3)))
    tensors = [t["name"] for t in litert.plain_interpreter().get_tensor_details()]
    assert tensors and not [name for name in tensors if "aux" in name]
    np.testing.assert_allclose(litert(x), model.predict(x, verbose=0), atol=1e-3)
    path = export_saved_model(model, tmp_path / "saved")
    loaded = tf.saved_model.load(str(path))
    assert not [v.name for v in loaded.model_variables if "aux" in v.name]
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    functions = [node for f in graph.library.function for node in f.node_def]
    assert not [node.name for node in [*graph.node, *functions] if "aux" in node.name]


def test_pointrend_and_the_auxiliary_head_train_together():
    model = DeepLabV3(
        3,
        aux_head=True,
        pointrend=True,
        pointrend_training_points=50,
        pointrend_image_features=True,
        **TINY,
    )
    model.compile(keras.optimizers.SGD(0.01), SegmentationLoss(3))
    outputs = model(images(2, SIZE, SIZE), training=True)
    assert {"logits", "aux_logits", "point_logits", "points"} <= set(outputs)
    assert outputs["points"].shape == (2, 50, 2)
    history = model.fit(images(2, SIZE, SIZE), _labels(), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
