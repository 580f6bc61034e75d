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

    Training-only heads (PointRend's point head, the auxiliary classifier) are layers of the
    graph with `training_outputs(*their inputs, training)` and `training_loss(y, outputs,
    loss)` methods. Training (`model(x, training=True)`, as `fit` calls it) then returns
    {"logits": the dense logits, **every head's training outputs}, `compute_loss` adds each
    head's loss to the compiled one, and `compute_metrics` scores the logits. Inference never
    runs them.
    """

    def training_heads(self):
        """The graph's layers with training outputs, in graph order."""
        return [layer for layer in self.layers if hasattr(layer, "training_outputs")]

    def call(self, inputs, training=None, mask=None, **kwargs):
        symbolic = isinstance(inputs, keras.KerasTensor)
        if training and not symbolic and self.training_heads():
            return self._training_call(inputs)
        if training or multi_replica_context() is None or symbolic:
            return super().call(inputs, training=training, mask=mask, **kwargs)
        # One blank image where this replica's batch is empty, its output sliced off again.
        count = tf.shape(inputs)[0]
        blank = tf.zeros(tf.concat([[tf.maximum(1 - count, 0)], tf.shape(inputs)[1:]], 0))
        padded = tf.concat([inputs, tf.cast(blank, inputs.dtype)], axis=0)
        outputs = super().call(padded, training=training, mask=mask, **kwargs)
        return keras.tree.map_structure(lambda output: output[:count], outputs)

    def inference_weights(self):
        """The weights inference uses: all but those of layers that run only in training
        (`runs_at_inference = False`, e.g. the auxiliary head), for exports."""
        skipped = {
            id(weight)
            for layer in self.layers
            if getattr(layer, "runs_at_inference", True) is False
            for weight in layer.weights
        }
        return [weight for weight in self.weights if id(weight) not in skipped]

    def _training_call(self, inputs):
        heads = self.training_heads()
        logits, *head_inputs = self._training_graph(heads)(inputs, training=True)
        outputs = {"logits": logits}
        for head in heads:
            count = len(head.input)
            outputs.update(head.training_outputs(*head_inputs[:count], training=True))
            head_inputs = head_inputs[count:]
        return outputs

    def _training_graph(self, heads):
        """This model's graph with the heads' inputs as extra outputs, so that one forward pass
        gives both the logits and what the heads read. It holds the same layers (and weights),
        so it is kept out of Keras' tracking: it is not a sub-layer of its own."""
        graph = self.__dict__.get("_graph_with_head_inputs")
        if graph is None:
            head_inputs = [tensor for head in heads for tensor in head.input]
            graph = keras.Model(self.input, [self.outputs[0], *head_inputs])
            object.__setattr__(self, "_graph_with_head_inputs", graph)
        return graph

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        outputs = y_pred if isinstance(y_pred, dict) else {"logits": y_pred}
        loss = super().compute_loss(
            x=x, y=y, y_pred=outputs["logits"], sample_weight=sample_weight, training=training
        )
        if y is None or len(outputs) == 1:
            return loss
        for head in self.training_heads():
            loss = loss + tf.cast(head.training_loss(y, outputs, self.loss), loss.dtype)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits = y_pred["logits"] if isinstance(y_pred, dict) else y_pred
        return super().compute_metrics(x, y, logits, sample_weight=sample_weight)

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
