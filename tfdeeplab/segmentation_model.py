"""The Keras model class of every tfdeeplab segmentation network.

Shapes: B batch, H height, W width, K classes.
"""

import keras
import tensorflow as tf
from keras.src.losses.loss import unscale_loss_for_distribution

from tfdeeplab.losses import multi_replica_context


@keras.saving.register_keras_serializable(package="tfdeeplab")
class SegmentationModel(keras.Model):
    """A functional segmentation model (image (B, H, W, 3) → logits (B, H, W, K)) that is safe
    and exact under `tf.distribute` with any batch size.

    - Inference (`predict`, `evaluate`, `model(x)` in a replica context) runs a replica whose
      share of the batch is empty on one blank image and returns an empty result: with 2
      replicas, a batch of 1 (or a last partial batch) leaves one replica nothing, and TF's
      oneDNN CPU convolution dies of a SIGFPE on an empty batch (a `tf.cond` around the
      network does not help: the crash happens all the same). Training batches are whole
      (the pipelines drop remainders) and are not padded.
    - `evaluate` weights every replica's loss equally within a batch: tfdeeplab's losses divide
      by the global count of valid pixels (see `tfdeeplab.losses.replica_mean`), so each
      replica's value is a share of the batch mean, not a per-image mean.
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training or multi_replica_context() is None or isinstance(inputs, keras.KerasTensor):
            return super().call(inputs, training=training, mask=mask, **kwargs)
        # One blank image where this replica's batch is empty, its output sliced off again.
        count = tf.shape(inputs)[0]
        blank = tf.zeros(tf.concat([[tf.maximum(1 - count, 0)], tf.shape(inputs)[1:]], 0))
        padded = tf.concat([inputs, tf.cast(blank, inputs.dtype)], axis=0)
        outputs = super().call(padded, training=training, mask=mask, **kwargs)
        return keras.tree.map_structure(lambda output: output[:count], outputs)

    def fit(self, *args, **kwargs):
        self._build_optimizer()
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._build_optimizer()
        return super().train_on_batch(*args, **kwargs)

    def _build_optimizer(self):
        """Creates the optimizer's variables (Adam's moments, SGD's momentum) eagerly, before
        the train step is traced. Without a distribution strategy Keras' TensorFlow trainer
        leaves them to the first trace, and a `tf.function` that creates variables on its first
        trace is traced a second time: the first `fit` of a tiny PointRend model took 42 s,
        23 s with the variables built here (0.7 s of it the eager build). The variables are
        the ones Keras would create: one set per trainable variable, in the model's strategy.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        batch = tf.cast(tf.shape(x)[0], tf.float32)
        context = multi_replica_context()
        if context is not None:  # the mean batch per replica, the same on every replica
            batch = context.all_reduce(tf.distribute.ReduceOp.MEAN, batch)
        self._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=batch)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
