"""SavedModel export for `tf.saved_model` serving (TF Serving, `saved_model_cli`, plain TF)."""

import json
import tempfile
from pathlib import Path

import tensorflow as tf

from converters.metadata import SAVED_MODEL_ASSET
from tfdeeplab.atomic import atomic_directory, refuse_overwrite


def _decode(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.cast(image, tf.float32)


def export_saved_model(model, path, overwrite=False, metadata=None):
    """Writes `model` as a SavedModel with three signatures, atomically.

    - `serving_default`: `images` float32 (B, H, W, bands) (RGB in [0, 255] for RGB models),
      any H and W →
      `{"logits": float32 (B, H, W, K), "mask": int32 (B, H, W) class ids}`.
    - `serve_encoded` (RGB models): `images` string (B,) of encoded JPEG/PNG/BMP/GIF bytes,
      all of one size → `{"mask": int32 (B, H, W)}`, for REST clients that send files.
    - `metadata`: no input → `{"metadata": string}`, the JSON of `converters.metadata` (class
      names and colours, input convention, ...), also stored as
      `assets/tfdeeplab_metadata.json` (`converters.read_metadata(path)` reads it without
      TensorFlow).

    The folder loads with plain `tf.saved_model.load` (no tfdeeplab, no Keras needed) and runs
    with `saved_model_cli run`. It is written to a temporary folder and renamed into place, so
    an interrupted export leaves nothing at `path`.

    Args:
        model: a tfdeeplab Keras 3 model returning logits.
        path: the SavedModel folder.
        overwrite: replace an existing folder.
        metadata: `converters.metadata.describe(model, ...)`; default: the model's own facts
            with generic class names and the palette's colours.

    Returns:
        The path written.
    """
    from converters.metadata import describe, tensor_description, with_tensors

    refuse_overwrite(path, overwrite)
    description = describe(model) if metadata is None else metadata
    classes = description["output"]["num_classes"]
    bands = int(model.input_shape[-1])
    description = with_tensors(
        description,
        tensor_description((None, None, None, bands), "float32"),
        tensor_description((None, None, None, classes), "float32"),
        "logits",
        "none",
    )
    text = json.dumps(description, sort_keys=True)

    def serve(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        return {"logits": logits, "mask": tf.argmax(logits, -1, output_type=tf.int32)}

    def serve_encoded(encoded):
        # Images of different sizes cannot share a batch: say so instead of a stacking error.
        shapes = tf.map_fn(
            lambda data: tf.shape(_decode(data)), encoded, fn_output_signature=tf.int32
        )
        same_size = tf.debugging.assert_equal(
            shapes,
            tf.broadcast_to(shapes[0], tf.shape(shapes)),
            message="serve_encoded: all images of one request must have the same size",
        )
        with tf.control_dependencies([same_size]):
            images = tf.map_fn(
                _decode, encoded, fn_output_signature=tf.TensorSpec((None, None, 3), tf.float32)
            )
        return {"mask": serve(images)["mask"]}

    # keras.export.ExportArchive stores every weight twice (keras-team/keras#23553: the tracked
    # keras.Variable wrappers and the tf.Variables the functions capture); a plain tf.Module
    # tracking only the tf.Variables stores each once, half the size.
    module = tf.Module()
    weights = model.inference_weights() if hasattr(model, "inference_weights") else model.weights
    module.model_variables = [variable.value for variable in weights]
    images = tf.TensorSpec((None, None, None, bands), tf.float32, name="images")
    module.serve = tf.function(serve, input_signature=[images])
    module.metadata = tf.function(lambda: {"metadata": tf.constant(text)}, input_signature=[])
    signatures = {"serving_default": module.serve, "metadata": module.metadata}
    if bands == 3:
        module.serve_encoded = tf.function(
            serve_encoded, input_signature=[tf.TensorSpec((None,), tf.string, name="images")]
        )
        signatures["serve_encoded"] = module.serve_encoded
    with atomic_directory(path) as temporary, tempfile.TemporaryDirectory() as folder:
        asset = Path(folder) / SAVED_MODEL_ASSET  # saved as assets/<this name>
        asset.write_text(text)
        module.metadata_file = tf.saved_model.Asset(str(asset))
        tf.saved_model.save(module, str(temporary), signatures=signatures)
    return path
