"""Atrous Spatial Pyramid Pooling (DeepLabV3, arXiv:1706.05587, section 3.3)."""

import keras

from tfdeeplab.layers.atrous import AtrousConv2D
from tfdeeplab.layers.fused_batch_norm import FusedBatchNormalization


def _conv_bn_relu(conv, name, momentum, epsilon):
    return [
        conv,
        FusedBatchNormalization(momentum=momentum, epsilon=epsilon, name=f"{name}_bn"),
        keras.layers.ReLU(name=f"{name}_relu"),
    ]


@keras.saving.register_keras_serializable(package="tfdeeplab")
class ASPP(keras.layers.Layer):
    """ASPP with image-level features.

    Branches, each followed by BN + ReLU: one 1×1 convolution, one 3×3 atrous convolution per rate,
    and an image-level branch (global average pool → 1×1 conv → BN → ReLU → back to the feature
    size). They are concatenated and projected by a 1×1 convolution + BN + ReLU + dropout.

    Args:
        filters: channels of every branch and of the projection (256 in the paper).
        rates: dilation rates of the 3×3 branches; (6, 12, 18) at output stride 16.
        dropout: dropout rate after the projection.
        batchnorm_momentum: momentum of the BatchNormalization layers.
        batchnorm_epsilon: their epsilon (Keras' 1e-3 by default; torchvision's is 1e-5).

    Input (B, H, W, C) backbone features; output (B, H, W, filters).

    Attributes (the layer's structure, public for tools that rebuild it, e.g. the tf_keras
    bridge of `converters`):
        branches: the convolution branches in concatenation order, each [conv, BN, ReLU]: the
            1×1 branch, then one 3×3 atrous branch per rate.
        pooling, pool_branch: the image-level branch, concatenated after `branches`: global
            average pooling, then [1×1 conv, BN, ReLU], broadcast back to H × W.
        concat, projection, dropout_layer: what follows the concatenation. (`call` computes
            the projection of the concatenation by parts, see `_project`: same weights, same
            values, less work.)
    """

    def __init__(
        self,
        filters=256,
        rates=(6, 12, 18),
        dropout=0.1,
        batchnorm_momentum=0.99,
        batchnorm_epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rates = tuple(int(r) for r in rates)
        self.dropout = float(dropout)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)
        bn = (self.batchnorm_momentum, self.batchnorm_epsilon)
        conv = keras.layers.Conv2D
        self.branches = [
            _conv_bn_relu(conv(filters, 1, use_bias=False, name="aspp0"), "aspp0", *bn)
        ]
        for i, rate in enumerate(self.rates, start=1):
            atrous = AtrousConv2D(
                filters, 3, padding="same", dilation_rate=rate, use_bias=False, name=f"aspp{i}"
            )
            self.branches.append(_conv_bn_relu(atrous, f"aspp{i}", *bn))
        self.pooling = keras.layers.GlobalAveragePooling2D(keepdims=True, name="image_pool")
        self.pool_branch = _conv_bn_relu(
            conv(filters, 1, use_bias=False, name="image_pool_conv"), "image_pool", *bn
        )
        self.concat = keras.layers.Concatenate(name="concat")
        self.projection = _conv_bn_relu(
            conv(filters, 1, use_bias=False, name="projection"), "projection", *bn
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout")

    def build(self, input_shape):
        channels = input_shape[-1]
        for branch in [*self.branches, self.pool_branch]:
            branch[0].build((None, None, None, channels))
            branch[1].build((None, None, None, self.filters))
        self.projection[0].build((None, None, None, self.filters * (len(self.rates) + 2)))
        self.projection[1].build((None, None, None, self.filters))

    @staticmethod
    def _run(stack, x, training):
        conv, bn, relu = stack
        return relu(bn(conv(x), training=training))

    def call(self, features, training=None):
        outputs = [self._run(branch, features, training) for branch in self.branches]
        pooled = self._run(self.pool_branch, self.pooling(features), training)
        conv, bn, relu = self.projection
        if training:
            x = bn(self._project(conv.kernel, outputs, pooled), training=training)
        else:  # inference: the BN is an affine map, folded into both parts of the projection
            scale, shift = _inference_affine(bn)
            x = self._project(conv.kernel * scale, outputs, pooled, shift)
        return self.dropout_layer(relu(x), training=training)

    def _project(self, kernel, outputs, pooled, shift=None):
        """The projection convolution of [branches…, image-level features broadcast to H × W],
        computed as its split: the 1×1 projection is linear, so the broadcast image-level
        features contribute one (B, 1, 1, filters) term, added (broadcast) to the projection of
        the branches. Equal to the concatenated form (tested), with 1/(branches + 1) less
        projection work and no H × W copy of the pooled features (in DeepLab's light mobile
        head, half the projection). `shift` (filters,), added to that small term, carries the
        inference BN's shift (its scale is in `kernel`): exported files then have no per-pixel
        MUL after the sum (in int8, one MUL of 33² × 256 at 257² in DeepLab's mobile head)."""
        kernel = keras.ops.cast(kernel, outputs[0].dtype)
        split = self.filters * len(outputs)
        spatial = self.concat(outputs) if len(outputs) > 1 else outputs[0]
        spatial = keras.ops.conv(spatial, kernel[:, :, :split])
        image_level = keras.ops.conv(pooled, kernel[:, :, split:])
        if shift is not None:
            image_level = image_level + keras.ops.cast(shift, image_level.dtype)
        return spatial + image_level

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "rates": list(self.rates),
            "dropout": self.dropout,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }


def _inference_affine(bn):
    """(scale, shift) per channel with bn(x, training=False) == x · scale + shift."""
    scale = keras.ops.rsqrt(bn.moving_variance + bn.epsilon)
    if bn.scale:
        scale = scale * bn.gamma
    shift = -bn.moving_mean * scale
    if bn.center:
        shift = shift + bn.beta
    return scale, shift
