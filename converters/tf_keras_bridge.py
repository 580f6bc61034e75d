"""Rebuilds a tfdeeplab Keras 3 model as the same functional graph in `tf_keras` (Keras 2).

TensorFlow Model Optimization 0.8.1 annotates and quantizes `tf_keras` models only; it rejects
Keras 3 ones (tensorflow/model-optimization#1119, #1270). The bridge walks the model's functional
config (the documented serialization format: layer list plus `inbound_nodes`), builds every
layer's `tf_keras` counterpart and copies its weights, so the rebuilt model computes the same
function and TFMOT can annotate it.

Builtin Keras layers map to the `tf_keras` class of the same name with the same structural
config. tfdeeplab's layers map to:
- `AtrousConv2D` / `AtrousDepthwiseConv2D` / `AtrousSeparableConv2D` → the plain `tf_keras`
  convolution with the same dilation: TFMOT's batch-norm folding matches those classes, and at
  the static input size of a quantized export the converter fuses their dilation into one
  CONV_2D / DEPTHWISE_CONV_2D.
- `FusedBatchNormalization` → `tf_keras` `BatchNormalization` (the same layer; only its
  training kernel differs).
- `ASPP` → its sublayers, expanded into the graph, so each convolution + BN + ReLU folds.
- `ImageNormalization`, `ResizeLike`, `AlignedPadding`, `CropLike`, `PointRendRefiner` → the
  `tf_keras` layers below, which compute the same TF ops (through the functions the Keras 3
  layers call: `resize`, `pad_to_aligned`, `crop_like`, `adaptive_subdivision`).
- `AuxiliaryHead` → nothing: it passes the logits through at inference, and QAT fine-tunes
  without it.
"""

import tensorflow as tf
import tf_keras

from tfdeeplab.layers.image_normalization import bgr_kernel
from tfdeeplab.layers.pointrend import (
    adaptive_subdivision,
    build_point_head,
    fine_channels,
    pixel_features,
    point_head_layers,
    point_head_logits,
    points_per_step,
)
from tfdeeplab.layers.resize_like import crop_like, pad_to_aligned, resize

# Config keys that do not change the computation; initialisers are moot as weights are copied,
# and Keras 3's dtype policies do not deserialize in tf_keras.
_DROPPED_KEYS = {"dtype", "synchronized", "build_config", "compile_config"}


def _structural_config(layer):
    config = dict(layer.get_config())
    for key in list(config):
        if key in _DROPPED_KEYS or key.endswith(("_initializer", "_regularizer", "_constraint")):
            del config[key]
    return config


@tf_keras.saving.register_keras_serializable(package="tfdeeplab_bridge")
class Affine(tf_keras.layers.Layer):
    """`ImageNormalization` in tf_keras: optional RGB→BGR flip, then x * scale + offset."""

    def __init__(self, scale, offset, reverse_channels=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]
        self.reverse_channels = bool(reverse_channels)

    def call(self, images):
        offset = tf.constant(self.offset, images.dtype)
        if self.reverse_channels:
            # As the Keras 3 layer: the flip and the scale as a 1×1 convolution with a
            # permutation kernel, not tf.reverse. A QAT file converted with REVERSE_V2 gave
            # normalised images 83% off (relative RMS) and a ResNet-50 agreeing with its
            # fake-quant Keras model on 74% of pixels (issue 17); the convolution is exact.
            kernel = tf.constant(bgr_kernel(self.scale), images.dtype)
            return tf.nn.conv2d(images, kernel, 1, "VALID") + offset
        return images * tf.constant(self.scale, images.dtype) + offset

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "offset": self.offset,
            "reverse_channels": self.reverse_channels,
        }


@tf_keras.saving.register_keras_serializable(package="tfdeeplab_bridge")
class BroadcastLike(tf_keras.layers.Layer):
    """ASPP's image-level branch upsampling: a (B, 1, 1, C) map broadcast to `reference`'s size."""

    def call(self, inputs):
        pooled, reference = inputs
        return pooled * tf.ones_like(reference[..., :1])


@tf_keras.saving.register_keras_serializable(package="tfdeeplab_bridge")
class ResizeLike(tf_keras.layers.Layer):
    """`tfdeeplab.layers.ResizeLike` in tf_keras."""

    def __init__(self, interpolation="bilinear", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        return resize(x, size, self.interpolation, self.align_corners)

    def get_config(self):
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "align_corners": self.align_corners,
        }


@tf_keras.saving.register_keras_serializable(package="tfdeeplab_bridge")
class AlignedPadding(tf_keras.layers.Layer):
    """`tfdeeplab.layers.AlignedPadding` in tf_keras."""

    def __init__(self, stride, value, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.value = [float(v) for v in value]

    def call(self, images):
        return pad_to_aligned(images, self.stride, self.value)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "value": self.value}


@tf_keras.saving.register_keras_serializable(package="tfdeeplab_bridge")
class CropLike(tf_keras.layers.Layer):
    """`tfdeeplab.layers.CropLike` in tf_keras."""

    def call(self, inputs):
        return crop_like(*inputs)


@tf_keras.saving.register_keras_serializable(package="tfdeeplab_bridge")
class PointRendRefiner(tf_keras.layers.Layer):
    """`tfdeeplab.layers.pointrend.PointRendRefiner`'s inference in tf_keras.

    In training mode it returns the coarse logits upsampled (as the Keras 3 layer does); the
    point head is not fine-tuned here, it keeps the trained float weights.
    """

    def __init__(
        self,
        num_classes,
        steps,
        points=None,
        channels=256,
        num_layers=3,
        align_corners=False,
        image_features=False,
        points_stride=None,
        pixel_scale=None,
        pixel_offset=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)
        self.image_features = bool(image_features)
        self.pixel_scale, self.pixel_offset = pixel_scale, pixel_offset
        self.points_stride = points_stride
        self.num_classes = int(num_classes)
        self.steps = int(steps)
        self.points = points
        self.channels = int(channels)
        self.num_layers = int(num_layers)
        self.hidden, self.predictor = point_head_layers(
            tf_keras.layers.Dense, self.num_classes, self.channels, self.num_layers
        )

    def build(self, input_shapes):
        channels = fine_channels(input_shapes, self.image_features)
        build_point_head(self.hidden, self.predictor, channels, self.num_classes)
        super().build(input_shapes)

    def _head(self, inputs):
        return point_head_logits(inputs, self.hidden, self.predictor, tf.float32)

    def call(self, inputs, training=None):
        coarse, fine, image = inputs
        size = tf.shape(image)[1:3]
        if training:
            return resize(coarse, size, "bilinear", self.align_corners)
        pixels = None
        if self.image_features:
            pixels = pixel_features(image, self.pixel_scale, self.pixel_offset)
        points = points_per_step(size, self.points, self.points_stride)
        return adaptive_subdivision(
            coarse, fine, size, self._head, self.steps, points, self.align_corners, pixels
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "steps": self.steps,
            "points": self.points,
            "channels": self.channels,
            "num_layers": self.num_layers,
            "align_corners": self.align_corners,
            "image_features": self.image_features,
            "points_stride": self.points_stride,
            "pixel_scale": self.pixel_scale,
            "pixel_offset": self.pixel_offset,
        }


def custom_objects():
    """The bridge's tf_keras layers, for `tf_keras` (de)serialization scopes."""
    classes = (Affine, BroadcastLike, ResizeLike, AlignedPadding, CropLike, PointRendRefiner)
    return {cls.__name__: cls for cls in classes}


class _Builder:
    """Builds tf_keras layers for Keras 3 layers and keeps the pairs, to copy weights after."""

    def __init__(self):
        self.pairs = []

    def same_class(self, layer, class_name=None):
        cls = getattr(tf_keras.layers, class_name or type(layer).__name__)
        built = cls.from_config(_structural_config(layer))
        self.pairs.append((built, layer))
        return built

    def call_layer(self, layer, args, kwargs):
        """Calls the tf_keras counterpart of `layer` on already translated tensors."""
        name = type(layer).__name__
        if name in _PLAIN_COUNTERPARTS:
            return self.same_class(layer, _PLAIN_COUNTERPARTS[name])(*args)
        if name == "Functional":
            return self.functional(layer, args[0])
        if name == "ASPP":
            return self.aspp(layer, args[0])
        if name == "ImageNormalization":
            affine = Affine(layer.scale, layer.offset, layer.mode.value == "caffe", name=layer.name)
            return affine(args[0])
        if name == "BandNormalization":
            return Affine(layer.scale, layer.offset, name=layer.name)(args[0])
        if name == "AlignedPadding":
            return AlignedPadding(layer.stride, layer.value, name=layer.name)(*args)
        if name == "CropLike":
            return CropLike(name=layer.name)(*args)
        if name == "ResizeLike":
            return ResizeLike(layer.interpolation, layer.align_corners, name=layer.name)(*args)
        if name == "AuxiliaryHead":  # training only: passes the logits through
            return args[0][0]
        if name == "PointRendRefiner":
            refiner = PointRendRefiner(
                layer.num_classes,
                layer.steps,
                layer.points,
                layer.head.channels,
                layer.head.num_layers,
                layer.align_corners,
                layer.image_features,
                layer.points_stride,
                layer.pixel_scale,
                layer.pixel_offset,
                name=layer.name,
            )
            self.pairs.append((refiner, layer))
            return refiner(*args)
        if hasattr(tf_keras.layers, name):
            return self.same_class(layer)(*args)
        raise ValueError(
            f"layer '{layer.name}' ({name}) has no tf_keras counterpart in the QAT bridge; "
            f"supported: builtin Keras layers and {', '.join(sorted(_TFDEEPLAB_LAYERS))}"
        )

    def conv_bn_relu(self, stack, x):
        for layer in stack:
            x = self.call_layer(layer, [x], {})
        return x

    def aspp(self, aspp, features):
        outputs = [self.conv_bn_relu(branch, features) for branch in aspp.branches]
        pooled = self.conv_bn_relu(aspp.pool_branch, self.same_class(aspp.pooling)(features))
        outputs.append(
            BroadcastLike(name=f"{aspp.name}_image_pool_broadcast")([pooled, outputs[0]])
        )
        x = self.same_class(aspp.concat)(outputs)
        x = self.conv_bn_relu(aspp.projection, x)
        return self.same_class(aspp.dropout_layer)(x)

    def functional(self, model, inputs):
        """Translates a (possibly nested) functional Keras 3 model applied to `inputs`."""
        config = model.get_config()
        tensors = {}
        (input_name, _, _), *rest = _as_history_list(config["input_layers"])
        if rest:
            raise ValueError(f"model '{model.name}' has several inputs; the bridge takes one")
        tensors[(input_name, 0, 0)] = inputs
        for spec in config["layers"]:
            if spec["class_name"] == "InputLayer":
                continue
            if len(spec["inbound_nodes"]) != 1:
                raise ValueError(
                    f"layer '{spec['name']}' is called {len(spec['inbound_nodes'])} times; the "
                    "bridge translates layers called once"
                )
            node = spec["inbound_nodes"][0]
            args = _fill_in(node["args"], tensors)
            kwargs = _fill_in(node.get("kwargs", {}), tensors)
            outputs = self.call_layer(model.get_layer(spec["name"]), args, kwargs)
            for index, tensor in enumerate(tf.nest.flatten(outputs)):
                tensors[(spec["name"], 0, index)] = tensor
        outputs = config["output_layers"]
        if isinstance(outputs, dict):
            return {key: tensors[tuple(history)] for key, history in outputs.items()}
        outputs = [tensors[tuple(history)] for history in _as_history_list(outputs)]
        return outputs[0] if len(outputs) == 1 else outputs

    def copy_weights(self):
        for built, layer in self.pairs:
            weights = layer.get_weights()
            if len(weights) != len(built.weights):
                raise ValueError(
                    f"layer '{layer.name}': {len(weights)} weights in Keras 3, "
                    f"{len(built.weights)} in tf_keras"
                )
            built.set_weights(weights)


_PLAIN_COUNTERPARTS = {
    "AtrousConv2D": "Conv2D",
    "AtrousDepthwiseConv2D": "DepthwiseConv2D",
    "AtrousSeparableConv2D": "SeparableConv2D",
    "FusedBatchNormalization": "BatchNormalization",
}
_TFDEEPLAB_LAYERS = {
    *_PLAIN_COUNTERPARTS,
    "ASPP",
    "ImageNormalization",
    "ResizeLike",
    "AlignedPadding",
    "CropLike",
    "PointRendRefiner",
    "AuxiliaryHead",
}


def _as_history_list(layers):
    """`input_layers` / `output_layers`: one [name, node, index] or a list of them."""
    return [layers] if layers and isinstance(layers[0], str) else list(layers)


def _fill_in(structure, tensors):
    """Replaces the `__keras_tensor__` entries of a node's arguments by translated tensors."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            name, node, index = structure["config"]["keras_history"]
            return tensors[(name, node, index)]
        return {key: _fill_in(value, tensors) for key, value in structure.items()}
    if isinstance(structure, list | tuple):
        return [_fill_in(value, tensors) for value in structure]
    return structure


def to_tf_keras(model, input_size=None):
    """The same network as a `tf_keras.Model`, with the Keras 3 model's weights.

    Args:
        model: a functional tfdeeplab model (`DeepLabV3(...)`, with or without PointRend).
        input_size: (H, W) of the rebuilt model's input; None keeps the model's (dynamic) size.
            Quantization-aware training and integer export want a static size.

    Returns:
        A `tf_keras.Model` taking the model's input (B, H, W, bands) and returning the logits.
    """
    height, width = (None, None) if input_size is None else input_size
    image = tf_keras.Input((height, width, model.input_shape[-1]), name="image")
    builder = _Builder()
    logits = builder.functional(model, image)
    rebuilt = tf_keras.Model(image, logits, name=model.name)
    builder.copy_weights()
    return rebuilt
