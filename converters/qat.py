"""Quantization-aware training (QAT) of tfdeeplab's Keras 3 models with TFMOT.

TFMOT 0.8.1 only quantizes tf_keras models, so the model is first rebuilt in tf_keras by
`converters.tf_keras_bridge.to_tf_keras` (same graph, same weights), annotated with TFMOT's
default 8-bit scheme — which folds every convolution + batch norm + ReLU and simulates int8
weights and activations with fake-quant ops — then fine-tuned with `fit`, so the weights adapt
to the rounding before the int8 conversion (Jacob et al., arXiv:1712.05877).
"""

import contextlib
import dataclasses
import itertools

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

from converters import tf_keras_bridge

quantize = tfmot.quantization.keras


@dataclasses.dataclass(frozen=True)
class QATOptions:
    """Fine-tuning settings of quantization-aware training.

    Attributes:
        epochs: passes over `steps_per_epoch` batches.
        steps_per_epoch: batches per epoch; None: one pass over the data.
        learning_rate: Adam's learning rate. On CamVid (benchmarks/QAT_CAMVID.md) 1e-6 put
            QAT at or above post-training int8 for MobileNetV2 and ResNet-50, 1e-5 cost
            MobileNetV2 1.1 points: the weights only need to adapt to the quantization grid.
        ignore_label: mask value without loss.
        freeze_batchnorm: keep the trained batch-norm statistics and scales (BN runs in
            inference mode); fine-tuning then adapts the convolutions to the int8 grid only.
        calibration_batches: batches that set the activation ranges before fine-tuning.
        verbose: `fit` verbosity (a progress bar by default).
    """

    epochs: int = 2
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-6
    ignore_label: int = 255
    freeze_batchnorm: bool = True
    calibration_batches: int = 20
    verbose: str | int = "auto"


class OutputQuantizeConfig(quantize.QuantizeConfig):
    """Quantizes a weightless layer's output (8-bit, asymmetric, moving-average range).

    For the bridge's normalisation, broadcast and resize layers: TFMOT's own config for
    UpSampling2D and Concatenate does the same.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [
            quantize.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self):
        return {}


class FloatQuantizeConfig(OutputQuantizeConfig):
    """Leaves a layer in float during fine-tuning: PointRend's refiner, whose top-k selection
    and scatter have no fake-quant model (the converter calibrates its int8 ops post-training),
    and the padding and crop, which pass their input's values on."""

    def get_output_quantizers(self, layer):
        return []


_BRIDGE_CONFIGS = {
    tf_keras_bridge.Affine: OutputQuantizeConfig,
    tf_keras_bridge.BroadcastLike: OutputQuantizeConfig,
    tf_keras_bridge.ResizeLike: OutputQuantizeConfig,
    # Padding and cropping keep their input's values: no range of their own (a fresh moving
    # average range would clip the float logits that PointRend's refiner hands to the crop).
    tf_keras_bridge.AlignedPadding: FloatQuantizeConfig,
    tf_keras_bridge.CropLike: FloatQuantizeConfig,
    tf_keras_bridge.PointRendRefiner: FloatQuantizeConfig,
}


def _scope():
    return quantize.quantize_scope(
        {
            **tf_keras_bridge.custom_objects(),
            "OutputQuantizeConfig": OutputQuantizeConfig,
            "FloatQuantizeConfig": FloatQuantizeConfig,
        }
    )


def quantize_aware_model(float_model):
    """TFMOT's default 8-bit QAT model of a tf_keras model built by the bridge.

    Builtin layers get TFMOT's configs; the bridge's own layers the ones in `_BRIDGE_CONFIGS`.
    """

    def annotate(layer):
        config = _BRIDGE_CONFIGS.get(type(layer))
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer
        return quantize.quantize_annotate_layer(layer, config() if config else None)

    annotated = tf_keras.models.clone_model(float_model, clone_function=annotate)
    with _scope():
        return quantize.quantize_apply(annotated)


@contextlib.contextmanager
def _activation_range_decay(decay):
    """Traces TFMOT's moving-average activation quantizers with another EMA decay.

    TFMOT starts every activation range at [-6, 6] and moves it with a fixed decay of 0.999:
    after the few hundred steps a CPU fine-tuning affords, ranges are still mostly the start
    value, far wider than most activations (the normalised image spans [-1, 1]), which costs
    precision (measured: 5 mIoU points on the synthetic-scenes model before any fine-tuning).
    A fast decay during a calibration pass sets them from data first, as post-training
    calibration does. TFMOT has no option for it, so its quant_ops function is wrapped while
    the calibration step is traced.
    """
    original = quant_ops.MovingAvgQuantize

    @tf.autograph.experimental.do_not_convert
    def with_decay(*args, **kwargs):
        return original(*args, **{**kwargs, "ema_decay": decay})

    quant_ops.MovingAvgQuantize = with_decay
    try:
        yield
    finally:
        quant_ops.MovingAvgQuantize = original


def calibrate_activation_ranges(qat_model, data, batches, decay=0.7):
    """Sets a QAT model's activation ranges from `batches` batches of `data` (images or
    (images, masks)); weights and frozen batch norms are unchanged."""
    with _activation_range_decay(decay):
        step = tf.function(lambda images: qat_model(images, training=True))
        for batch in itertools.islice(data, batches):
            step(batch[0] if isinstance(batch, tuple | list) else batch)


def quantization_aware_training(model, data, input_size, options=QATOptions()):
    """Fine-tunes a quantization-aware copy of a tfdeeplab Keras 3 model.

    Args:
        model: the trained Keras 3 model (unchanged by this function).
        data: a tf.data.Dataset of (images (B, H, W, 3) in [0, 255], masks (B, H, W)) at
            `input_size`, e.g. `converters.calibration_dataset(..., augment=True)`.
        input_size: (H, W); the QAT model has this static input size.
        options: `QATOptions`.

    Returns:
        The fine-tuned tf_keras QAT model; `converters.convert_to_tflite(..., quantization=
        "qat")` turns it into a full-integer TFLite file.
    """
    if options.epochs < 1:
        raise ValueError(f"QATOptions.epochs={options.epochs} must be ≥ 1")
    float_model = tf_keras_bridge.to_tf_keras(model, input_size)
    if options.freeze_batchnorm:
        for layer in float_model.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.trainable = False  # tf_keras: a frozen BN also runs in inference mode
    qat_model = quantize_aware_model(float_model)
    calibrate_activation_ranges(qat_model, data, options.calibration_batches)
    qat_model.compile(
        optimizer=tf_keras.optimizers.Adam(options.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=options.ignore_label
        ),
    )
    if options.steps_per_epoch is not None and isinstance(data, tf.data.Dataset):
        data = data.repeat()
    qat_model.fit(
        data,
        epochs=options.epochs,
        steps_per_epoch=options.steps_per_epoch,
        verbose=options.verbose,
    )
    return qat_model
