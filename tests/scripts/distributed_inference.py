"""predict and evaluate of a tiny DeepLabV3 built under a 2-replica MirroredStrategy (two
logical CPUs), with batches that leave a replica empty (1 image; 3 images in batches of 2);
prints the largest difference from the same model outside the strategy as JSON.

Run in its own process: logical devices must be configured before TensorFlow starts, and an
empty per-replica batch used to kill the process (SIGFPE in oneDNN's convolution).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.helpers import randomize_batchnorm
from tfdeeplab import DeepLabV3
from tfdeeplab.losses import SegmentationLoss


def main():
    pointrend = sys.argv[1:] == ["pointrend"]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = DeepLabV3(3, "mobilenetv2", alpha=0.35, aspp_filters=8, pointrend=pointrend)
        model.compile("sgd", SegmentationLoss(3))
    # Batch-norm statistics that keep activations alive: image-dependent logits, so that a
    # wrongly weighted loss shows.
    randomize_batchnorm(model)
    plain = DeepLabV3(3, "mobilenetv2", alpha=0.35, aspp_filters=8, pointrend=pointrend)
    plain.set_weights(model.get_weights())
    plain.compile("sgd", SegmentationLoss(3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=(3, 32, 32)).astype("int32")
    one = model.predict(x[:1], verbose=0)
    three = model.predict(x, batch_size=2, verbose=0)
    loss = model.evaluate(x, y, batch_size=2, verbose=0)
    json.dump(
        {
            "shapes": [list(one.shape), list(three.shape)],
            "predict_difference": float(np.abs(three - plain.predict(x, verbose=0)).max()),
            "one_difference": float(np.abs(one - three[:1]).max()),
            "loss": float(loss),
            "plain_loss": float(plain.evaluate(x, y, batch_size=2, verbose=0)),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
