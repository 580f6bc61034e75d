"""What `tfdeeplab predict` runs: a `.keras` model, a SavedModel folder or a `.tflite` file,
one image at a time.

Exported artifacts describe themselves (`converters.metadata`): their class colours come from
their metadata, so they need no data folder. A `.tflite` file with a fixed input size gets
each image fitted to it as evaluation does (the longer side scaled to the input, the rest
padded with the mean colour); its logits are cropped back and resized to the photo's size
before the argmax, so masks always have the photo's resolution.
"""

from pathlib import Path

import numpy as np


class KerasPredictor:
    """A `.keras` model (a path, or a loaded model), with multi-scale and flipped inference
    (`predict_probabilities`)."""

    def __init__(self, model, scales=(1.0,), flip=False):
        import keras

        self.model = model if isinstance(model, keras.Model) else keras.saving.load_model(model)
        self.num_classes = int(self.model.output_shape[-1])
        self.metadata = None
        self.scales, self.flip = scales, flip

    def __call__(self, image):
        from tfdeeplab.inference import predict_probabilities

        probabilities = predict_probabilities(self.model, image[None], self.scales, self.flip)
        return probabilities[0].argmax(-1)

    # The tile size of `tfdeeplab.predict_tiled` when none is given (any size runs).
    tile_size = None

    def logits(self, batch):
        """(B, H, W, K) float32 logits of a batch; with scales or flip, the log of the averaged
        probabilities (their argmax and blend are the averaged prediction's)."""
        if tuple(self.scales) == (1.0,) and not self.flip:
            return np.asarray(self.model.predict_on_batch(batch), np.float32)
        from tfdeeplab.inference import predict_probabilities

        probabilities = predict_probabilities(self.model, batch, self.scales, self.flip)
        return np.log(np.maximum(probabilities, 1e-12))


class SavedModelPredictor:
    """A SavedModel folder of `converters.export_saved_model` (its `serving_default`)."""

    def __init__(self, path):
        import tensorflow as tf

        from converters.metadata import read_metadata

        self.metadata = read_metadata(path)
        self.num_classes = int(self.metadata["output"]["num_classes"])
        self.serve = tf.saved_model.load(str(path)).signatures["serving_default"]

    def __call__(self, image):
        import tensorflow as tf

        return self.serve(images=tf.constant(image[None], tf.float32))["mask"][0].numpy()

    tile_size = None

    def logits(self, batch):
        import tensorflow as tf

        return self.serve(images=tf.constant(batch, tf.float32))["logits"].numpy()


class TFLitePredictor:
    """A `.tflite` file of `converters.export_tflite`, fp32 or quantized, logits or mask."""

    def __init__(self, path):
        from converters.litert import LiteRTModel
        from converters.metadata import read_metadata

        self.path = path
        self.metadata = read_metadata(path)
        self.num_classes = int(self.metadata["output"]["num_classes"])
        self.model = LiteRTModel(path)
        _, height, width, _ = self.model.input_shape
        self.size = None if height < 0 or width < 0 else (height, width)
        self.kind = self.metadata["output"]["kind"]

    def __call__(self, image):
        height, width = image.shape[:2]
        if self.size is None:
            return self._classes(self.model(image[None])[0], (height, width))
        from tfdeeplab.data.pipeline import resize_pair_for_eval

        # Evaluation's own fit (a zero mask marks where the photo lands: -1 is the padding).
        canvas, placed = resize_pair_for_eval(
            image, np.zeros((height, width), np.int32), self.size, -1
        )
        placed = placed.numpy() != -1
        fitted = (int(placed.any(axis=1).sum()), int(placed.any(axis=0).sum()))
        output = self.model(canvas.numpy()[None])[0][: fitted[0], : fitted[1]]
        return self._classes(output, (height, width))

    @property
    def tile_size(self):
        """The file's own square input size, or None for a dynamic-size file."""
        if self.size is None:
            return None
        if self.size[0] != self.size[1]:
            raise ValueError(
                f"{self.path}: tiles are square; this file takes {self.size[0]}×{self.size[1]} "
                "(export it with a square --input-size or dynamic)"
            )
        return self.size[0]

    def logits(self, batch):
        """(B, H, W, K) float32, one image per invocation (the file's batch is 1); a file
        that outputs class ids gives one-hot scores, which blend as votes."""
        outputs = [self.model(image[None])[0] for image in np.asarray(batch, np.float32)]
        if self.kind == "mask":
            return np.eye(self.num_classes, dtype=np.float32)[np.stack(outputs).astype(int)]
        return np.stack(outputs).astype(np.float32)

    def _classes(self, output, size):
        if self.kind == "mask":
            return _resize(output[..., None].astype(np.float32), size, "nearest")[..., 0]
        return _resize(output, size, "bilinear").argmax(-1)


def _resize(array, size, method):
    import tensorflow as tf

    if tuple(array.shape[:2]) == tuple(size):
        return np.asarray(array)
    return tf.image.resize(array, size, method=method).numpy()


def read_image(path):
    """An image file as float32 (H, W, bands): photos as RGB, TIFFs with all their bands in
    their own units (`tfdeeplab.data.rasters.read_image_array`); ValueError naming an
    unreadable file."""
    from PIL import UnidentifiedImageError

    from tfdeeplab.data.rasters import read_image_array

    try:
        return read_image_array(path)[0].astype(np.float32)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: unreadable image ({error})") from None


def class_colours(data, num_classes, metadata=None):
    """(num_classes, 3) uint8: `data`'s classes.json colours, else an artifact's metadata's,
    else the palette."""
    from tfdeeplab.data.folder import read_classes
    from tfdeeplab.visualize import palette

    if data:
        _, colours = read_classes(Path(data))
        if colours is not None and len(colours) == num_classes:
            return colours
    if metadata is not None:
        return np.asarray([c["colour"] for c in metadata["classes"]], np.uint8)
    return palette(num_classes)


def load_predictor(path, scales=(1.0,), flip=False):
    """The predictor for a `.keras` file, a SavedModel folder or a `.tflite` file.

    Raises:
        FileNotFoundError / ValueError: naming `path` (missing, unknown kind, or multi-scale
            and flip options for an exported artifact, which runs one view as exported).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such file or folder")
    if path.suffix == ".keras" and path.is_file():
        return KerasPredictor(path, scales, flip)
    if tuple(scales) != (1.0,) or flip:
        raise ValueError(
            f"--model {path}: --scales and --flip apply to .keras models; an exported artifact "
            "runs the single view it was exported for"
        )
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelPredictor(path)
    if path.suffix == ".tflite" and path.is_file():
        return TFLitePredictor(path)
    raise ValueError(f"--model {path}: not a .keras file, a SavedModel folder or a .tflite file")
