"""Batch normalization whose training step runs TensorFlow's fused kernel.

Keras 3's `BatchNormalization` computes training statistics with separate moments, subtract,
multiply and add ops, forward and backward. TensorFlow's `FusedBatchNormV3` and its gradient do
each in one pass; on 2 AVX2 cores (oneDNN on) forward + backward of a (2, 81, 81, 256) map
takes 16 ms instead of 29 ms, and ResNet-50 has 53 of them (`benchmarks.training`).

`FusedBatchNormalization` subclasses the Keras layer: same arguments, config, weights and
inference graph (so exports and `keras.applications` weights are unchanged). Only a training
call on a 4-D channels-last map, with the TensorFlow backend and none of the options the fused
kernel lacks (synchronized statistics, renorm, masks), takes the fused path; it computes the
same normalization, gradients and moving statistics (Keras keeps the biased batch variance,
the kernel returns the unbiased one, so it is converted back).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdeeplab")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training step (see the module)."""

    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and mask is None
            and not self.synchronized
            and not self.renorm
        )

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), "float32")
        variance = tf.where(count > 1, unbiased * (count - 1) / tf.maximum(count, 1), 0.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
