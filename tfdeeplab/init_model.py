"""Training that starts from a saved model (`train --init model.keras`), and a PointRend head
added to a trained model built without one (e.g. a model from `tfdeeplab.from_torchvision`):
`train --init model.keras --pointrend`.

The model must have what `DeepLabV3` builds: a nested model named "backbone" whose outputs
include the stride-4 "low" map, and a `ResizeLike` named "logits" (or "upsampled", before the
crop of corner-aligned models) that upsamples the coarse logits to the (padded) image. The
graph is replayed on a new input with the same layer objects (so every weight is shared), and
that resize is replaced by a `PointRendRefiner` on [coarse logits, low features, the resize's
reference image]: the refiner starts untrained, the rest keeps its weights.
"""

import keras
import numpy as np

from tfdeeplab.deeplabv3 import POINTS_STRIDE, PointRendDeepLab, _pointrend_refiner
from tfdeeplab.layers.auxiliary_head import AuxiliaryHead
from tfdeeplab.layers.pointrend import PointRendRefiner
from tfdeeplab.layers.resize_like import ResizeLike

RESIZE_NAMES = ("upsampled", "logits")
PROBE_SIZE = 256  # pixels of the square image whose coarse map gives the coarse stride


def _coarse_resize(model):
    if any(isinstance(layer, PointRendRefiner) for layer in model.layers):
        raise ValueError(f"model '{model.name}' has a PointRend head already")
    names = [layer.name for layer in model.layers]
    if "backbone" not in names:
        raise ValueError(
            f"model '{model.name}' has no nested model named 'backbone' whose 'low' map "
            "PointRend would read"
        )
    for name in RESIZE_NAMES:
        if name in names and isinstance(model.get_layer(name), ResizeLike):
            return model.get_layer(name)
    raise ValueError(
        f"model '{model.name}' has no ResizeLike layer named {' or '.join(RESIZE_NAMES)} "
        "upsampling its coarse logits: PointRend replaces that layer"
    )


def coarse_stride(model, resize):
    """The stride of the logits `resize` upsamples, measured on a `PROBE_SIZE`² image."""
    probe = keras.Model(model.input, resize.input[0])
    cells = probe(np.zeros((1, PROBE_SIZE, PROBE_SIZE, 3), np.float32), training=False).shape[1]
    stride = 2 ** round(np.log2(PROBE_SIZE / cells))
    if stride < 2:
        raise ValueError(f"model '{model.name}': its logits are at stride 1, nothing to refine")
    return stride


def add_pointrend(
    model, points=None, training_points=None, image_features=True, subdivision_steps=None
):
    """`model` with a new PointRend head (see the module); its other weights are shared.

    Args:
        model: a segmentation model as described in the module docstring.
        points, training_points, image_features, subdivision_steps: as `DeepLabV3`'s
            `pointrend_points`, `pointrend_training_points`, `pointrend_image_features` and
            `subdivision_steps`.

    Returns:
        A `PointRendDeepLab` named `<model.name>_pointrend` (trains the head with `fit`).
    """
    resize = _coarse_resize(model)
    backbone = model.get_layer("backbone")
    num_classes = int(resize.input[0].shape[-1])
    refiner = _pointrend_refiner(
        num_classes,
        coarse_stride(model, resize),
        subdivision_steps,
        resize.align_corners,
        points=points,
        points_stride=POINTS_STRIDE if points is None else None,
        training_points=training_points,
        image_features=image_features,
    )
    captured = {}

    def replay(layer, *args, **kwargs):
        if layer is resize:
            coarse, reference = args[0]
            return refiner([coarse, captured["low"], reference])
        outputs = layer(*args, **kwargs)
        if layer is backbone:
            captured["low"] = outputs["low"]
        return outputs

    images = keras.Input(shape=model.input.shape[1:], name="image")
    clone = keras.models.clone_model(
        model, input_tensors=images, clone_function=lambda layer: layer, call_function=replay
    )
    return PointRendDeepLab(images, clone.output, name=f"{model.name}_pointrend")


def _producer(tensor):
    return tensor._keras_history.operation


def _classifier(resize):
    """The 1×1 convolution that makes the coarse logits `resize` upsamples (looking through an
    `AuxiliaryHead`, which passes them on)."""
    layer = _producer(resize.input[0])
    while isinstance(layer, AuxiliaryHead):
        layer = _producer(layer.input[0])
    if not isinstance(layer, keras.layers.Conv2D):
        raise ValueError(f"the coarse logits come from '{layer.name}', not a convolution")
    return layer


def with_new_classifier(model, num_classes):
    """A copy of `model` predicting `num_classes`: its classifier (and an auxiliary head's
    classifier) freshly initialised, every other weight copied. The way to fine-tune a model
    trained on other classes (torchvision's COCO/VOC weights on your own classes)."""
    classifier = _classifier(_coarse_resize(model))
    renewed = {classifier.name} | {
        layer.name for layer in model.layers if isinstance(layer, AuxiliaryHead)
    }

    def clone(layer):
        config = layer.get_config()
        if layer.name in renewed:
            config.update(_classes_key(layer, num_classes))
        return type(layer).from_config(config)

    images = keras.Input(shape=model.input.shape[1:], name="image")
    rebuilt = keras.models.clone_model(model, input_tensors=images, clone_function=clone)
    copy = type(model)(images, rebuilt.output, name=model.name)
    for old in model.layers:
        new = copy.get_layer(old.name)
        if old.name not in renewed:
            new.set_weights(old.get_weights())
        elif isinstance(old, AuxiliaryHead):  # its body keeps its weights
            for part in ("conv", "bn"):
                getattr(new, part).set_weights(getattr(old, part).get_weights())
    return copy


def _classes_key(layer, num_classes):
    return (
        {"filters": num_classes}
        if isinstance(layer, keras.layers.Conv2D)
        else {"num_classes": num_classes}
    )


def load_initial_model(config, num_classes):
    """The model `config.init` names, to train: its architecture and weights; a PointRend head
    is added when `config.pointrend` asks for one and the model has none.

    Raises:
        ValueError: the model predicts another number of classes than the data has.
    """
    from tfdeeplab.segmentation_model import SegmentationModel

    model = keras.saving.load_model(config.init, compile=False)
    if not isinstance(model, SegmentationModel):
        raise ValueError(f"--init {config.init}: not a tfdeeplab segmentation model")
    has_pointrend = any(isinstance(layer, PointRendRefiner) for layer in model.layers)
    classes = model.output_shape[-1]
    if classes != num_classes:
        if has_pointrend:
            raise ValueError(
                f"--init {config.init} predicts {classes} classes with a PointRend head; the "
                f"data has {num_classes}: start from a model without PointRend"
            )
        model = with_new_classifier(model, num_classes)
        print(f"--init {config.init}: new classifier for {num_classes} classes (was {classes})")
    if config.pointrend and not has_pointrend:
        model = add_pointrend(
            model,
            config.pointrend_points,
            config.pointrend_training_points,
            config.pointrend_image_features,
        )
    return model
