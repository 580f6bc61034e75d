"""tfdeeplab.init_model: a PointRend head grafted onto a model built without one, and a new
classifier for other classes, each keeping every other weight."""

import keras
import numpy as np
import pytest

from tests.helpers import images
from tfdeeplab import DeepLabV3
from tfdeeplab.deeplabv3 import PointRendDeepLab
from tfdeeplab.init_model import add_pointrend, with_new_classifier

TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 16}


def test_grafted_pointrend_is_the_head_deeplabv3_builds_and_shares_the_rest():
    model = DeepLabV3(4, **TINY)
    grafted = add_pointrend(model)
    native = DeepLabV3(4, pointrend=True, **TINY)
    assert isinstance(grafted, PointRendDeepLab) and grafted.name == f"{model.name}_pointrend"
    assert grafted.get_layer("pointrend").get_config() == native.get_layer("pointrend").get_config()
    for old, new in zip(
        model.get_layer("backbone").weights, grafted.get_layer("backbone").weights, strict=True
    ):
        assert old is new
    x = images(2, 64, 48)
    assert grafted(x).shape == (2, 64, 48, 4)
    with pytest.raises(ValueError, match="has a PointRend head already"):
        add_pointrend(native)
    plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    with pytest.raises(ValueError, match="no nested model named 'backbone'"):
        add_pointrend(plain)


def test_new_classifier_keeps_every_other_weight():
    model = DeepLabV3(7, aux_head=True, **TINY)
    renewed = with_new_classifier(model, 3)
    x = images(1, 64, 64)
    assert renewed(x).shape == (1, 64, 64, 3)
    assert renewed.get_layer("aux_head").num_classes == 3
    features = [keras.Model(m.input, m.get_layer("aspp").output) for m in (model, renewed)]
    np.testing.assert_array_equal(features[0](x), features[1](x))
    for part in ("conv", "bn"):
        old, new = (m.get_layer("aux_head") for m in (model, renewed))
        for a, b in zip(
            getattr(old, part).get_weights(), getattr(new, part).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
