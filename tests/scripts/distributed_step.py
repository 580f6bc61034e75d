"""One SGD step of a tiny DeepLabV3 (plain and PointRend) on one device and under a 2-replica
strategy, for the same global batch; prints the losses and the largest difference of the weight
updates as JSON.

    python distributed_step.py               # MirroredStrategy over two logical CPUs
    TF_CONFIG=... python distributed_step.py multiworker   # one of 2 workers, one CPU each

Run in its own process: logical devices must be configured before TensorFlow starts. Under
MultiWorkerMirroredStrategy each worker trains on its half of the global batch.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf

MULTIWORKER = sys.argv[1:] == ["multiworker"]
if not MULTIWORKER:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

import tfdeeplab.layers.pointrend as pointrend
from tfdeeplab import DeepLabV3
from tfdeeplab.losses import SegmentationLoss
from tfdeeplab.strategy import patch_for_multiworker

SIZE, BATCH, CLASSES = 32, 4, 3


def fixed_points(coarse_logits, num_points, **kwargs):
    """The same points for every image, so that both runs train the head at the same places."""
    grid = np.random.default_rng(7).uniform(0, 1, size=(num_points, 2)).astype("float32")
    return tf.tile(tf.constant(grid)[None], [tf.shape(coarse_logits)[0], 1, 1])


def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(BATCH, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, CLASSES, size=(BATCH, SIZE, SIZE)).astype("int32")
    # Ignored pixels spread unevenly: replica 0 gets many more than replica 1.
    y[0, :20] = 255
    y[1, :, :10] = 255
    y[3, :2, :2] = 255
    return x, y


def build(pointrend_on, weights=None):
    keras.utils.set_random_seed(1)
    model = DeepLabV3(
        CLASSES,
        "mobilenetv2",
        alpha=0.35,
        aspp_filters=8,
        dropout=0.0,
        batchnorm_momentum=0.9,
        pointrend=pointrend_on,
    )
    # Frozen batch norm (moving statistics): each image's logits then depend on that image
    # alone, so the two runs differ only in how the losses and gradients are combined.
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    if weights is not None:
        model.set_weights(weights)
    model.compile(keras.optimizers.SGD(1.0), SegmentationLoss(CLASSES))
    return model


def one_step(model, dataset=None):
    x, y = data()
    before = [w.numpy().copy() for w in model.trainable_weights]
    if dataset is None:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    loss = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    updates = [w.numpy() - b for w, b in zip(model.trainable_weights, before, strict=True)]
    return loss, updates


def worker_shards():
    """The global batch, sharded by element across the workers: `fit` splits the batch of 4
    into the workers' batches of 2, and each worker keeps its own."""
    x, y = data()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).with_options(options)


def main():
    pointrend.sample_training_points = fixed_points
    if MULTIWORKER:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    else:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for pointrend_on in (False, True):
        single = build(pointrend_on)
        weights = single.get_weights()
        single_loss, single_updates = one_step(single)
        with strategy.scope():
            mirrored = build(pointrend_on, weights)
        shards = None
        if MULTIWORKER:
            # As `tfdeeplab.training.train` does: Keras 3's fit needs it under this strategy.
            patch_for_multiworker(mirrored)
            shards = worker_shards()
        mirrored_loss, mirrored_updates = one_step(mirrored, shards)
        results["pointrend" if pointrend_on else "deeplabv3"] = {
            "single_loss": single_loss,
            "mirrored_loss": mirrored_loss,
            "max_update": max(float(np.abs(u).max()) for u in single_updates),
            "max_update_difference": max(
                float(np.abs(a - b).max())
                for a, b in zip(single_updates, mirrored_updates, strict=True)
            ),
        }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
