"""An auxiliary classifier on the backbone's stride-16 features, for training only.

torchvision's `deeplabv3_*(aux_loss=True)` and arcgis.learn's DeepLab add one: an FCN head on
the stage before the last whose loss, weighted, joins the main loss and gives the middle of the
backbone a short path to the labels. It is dropped at inference.
"""

import keras
import tensorflow as tf

from tfdeeplab.layers.fused_batch_norm import FusedBatchNormalization
from tfdeeplab.layers.resize_like import crop_like, resize


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AuxiliaryHead(keras.layers.Layer):
    """torchvision's `FCNHead`: 3×3 convolution to C/4 channels (no bias), BN, ReLU, dropout,
    1×1 convolution to K classes, on the "mid" backbone features (C channels).

    In a model's graph it is called on [coarse logits, mid features, padded image, image] and
    returns the coarse logits unchanged, without an op: it sits there only so that its weights
    save, load and restore with the model, and inference graphs and exports have none of its
    work. `training_outputs` gives its logits while training (see `SegmentationModel`), and
    `training_loss` their loss.

    Args:
        num_classes: K.
        channels: C/4 in torchvision: the 3×3 convolution's output channels.
        dropout: after the ReLU (0.1 in torchvision).
        loss_weight: weight of its loss (0.4 in arcgis.learn; torchvision's reference uses 0.5).
        align_corners: the upsampling convention of the model's logits.
        batchnorm_momentum: of its BatchNormalization.
        batchnorm_epsilon: of its BatchNormalization (Keras' 1e-3; torchvision's is 1e-5).
    """

    def __init__(
        self,
        num_classes,
        channels,
        dropout=0.1,
        loss_weight=0.4,
        align_corners=True,
        batchnorm_momentum=0.99,
        batchnorm_epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.dropout = float(dropout)
        self.loss_weight = float(loss_weight)
        self.align_corners = bool(align_corners)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)
        self.conv = keras.layers.Conv2D(
            self.channels, 3, padding="same", use_bias=False, name="aux_conv"
        )
        self.bn = FusedBatchNormalization(
            momentum=self.batchnorm_momentum, epsilon=self.batchnorm_epsilon, name="aux_bn"
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="aux_dropout")
        self.classifier = keras.layers.Conv2D(self.num_classes, 1, name="aux_classifier")

    runs_at_inference = False  # its weights stay out of exports

    def build(self, input_shapes):
        features = input_shapes[1]
        self.conv.build((None, None, None, features[-1]))
        self.bn.build((None, None, None, self.channels))
        self.classifier.build((None, None, None, self.channels))

    def call(self, inputs):
        return inputs[0]

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def training_outputs(self, coarse, features, padded, image, training=True):
        """{"aux_logits": (B, H, W, K) float32 at `image`'s size}: the head on `features`,
        upsampled to the `padded` image as the model's logits are, then cropped to `image`."""
        x = keras.ops.relu(self.bn(self.conv(features), training=training))
        x = self.classifier(self.dropout_layer(x, training=training))
        size = tf.shape(padded)[1:3]
        upsampled = resize(tf.cast(x, tf.float32), size, "bilinear", self.align_corners)
        return {"aux_logits": crop_like(upsampled, image)}

    def training_loss(self, y, outputs, loss):
        """`loss_weight` × the model's compiled `loss` of the auxiliary logits."""
        return self.loss_weight * tf.cast(loss(y, outputs["aux_logits"]), tf.float32)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "channels": self.channels,
            "dropout": self.dropout,
            "loss_weight": self.loss_weight,
            "align_corners": self.align_corners,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }
