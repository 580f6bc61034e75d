"""Self-describing artifacts: what an app needs to use a `.tflite` file or a SavedModel without
the run that made it (class names and colours, input size, colour order, value range and
normalisation, output kind, ignore label, versions, a digest of the training config).

Where it lives:
- TFLite: a model-level metadata entry of the flatbuffer named "tfdeeplab" whose buffer holds
  the JSON (UTF-8), beside the converter's own "min_runtime_version" entry. The TFLite Metadata
  schema (`tflite-support`) was checked first: its last release, 0.4.4 (2023), requires
  protobuf < 4, and TensorFlow 2.21 needs protobuf ≥ 5, so the two cannot share an
  environment.
- SavedModel: `assets/tfdeeplab_metadata.json`, and a `metadata` signature returning the same
  JSON as a string tensor.

`read_metadata(path)` needs only Python's standard library: no TensorFlow, LiteRT or
tfdeeplab (it parses the flatbuffer's tables itself), so an app's build step or a server can
read it anywhere.
"""

import hashlib
import json
import struct
from pathlib import Path

SCHEMA = "tfdeeplab.metadata/1"
TFLITE_ENTRY = "tfdeeplab"
SAVED_MODEL_ASSET = "tfdeeplab_metadata.json"

# What each normalisation convention does to the RGB [0, 255] input, for people and apps.
_NORMALIZATION = {
    "tf": "x / 127.5 - 1",
    "caffe": "RGB to BGR, then x - (103.939, 116.779, 123.68)",
    "torch": "(x / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)",
}


def _band_input(layer, mode):
    """The input entry of a multispectral model (`BandNormalization`)."""
    scale, offset = layer.scale.tolist(), layer.offset.tolist()
    return {
        "bands": layer.bands,
        "rgb_bands": list(layer.rgb_bands),
        "band_mean": layer.band_mean,
        "band_std": layer.band_std,
        "value_range": None if layer.band_mean is not None else [0, 255],
        "normalization": {
            "mode": mode,
            "inside_model": True,
            "formula": f"x * {[round(v, 6) for v in scale]} + {[round(v, 6) for v in offset]}",
        },
    }


def config_digest(config):
    """SHA-256 of a training config (a JSON-able mapping), keys sorted: equal configs, equal
    digests."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def describe(model, class_names=None, colours=None, ignore_label=255, training_config=None):
    """The metadata of a tfdeeplab Keras model, before export (the exporters add the input
    and output tensors' shapes, types and quantization).

    Args:
        model: a tfdeeplab Keras model returning logits (B, H, W, K).
        class_names: K names; default "class_0" … .
        colours: K RGB triples; default `tfdeeplab.visualize.palette(K)`.
        ignore_label: the label value the training data left unlabelled.
        training_config: the run's config (`config.json` of `tfdeeplab train`), stored as a
            SHA-256 digest with its backbone, output stride and PointRend setting.
    """
    import tfdeeplab
    from tfdeeplab.inference import model_align_corners
    from tfdeeplab.layers.image_normalization import BandNormalization, ImageNormalization
    from tfdeeplab.visualize import palette

    shape = model.output_shape
    single = isinstance(shape, tuple) and all(d is None or isinstance(d, int) for d in shape)
    num_classes = int(shape[-1]) if single else 0  # a feature extractor: maps, no classes
    names = list(class_names) if class_names is not None else None
    names = names or [f"class_{index}" for index in range(num_classes)]
    colours = palette(num_classes)[:num_classes] if colours is None else colours
    if len(names) != num_classes or len(colours) != num_classes:
        raise ValueError(
            f"{len(names)} class names and {len(colours)} colours for a model of "
            f"{num_classes} classes"
        )
    layers = _all_layers(model)
    kinds = ImageNormalization | BandNormalization
    normalizations = [layer for layer in layers if isinstance(layer, kinds)]
    mode = normalizations[0].mode.value if normalizations else None
    description = {
        "schema": SCHEMA,
        "task": "semantic segmentation" if single else "feature extraction",
        "tfdeeplab_version": tfdeeplab.__version__,
        "classes": [
            {"id": index, "name": str(name), "colour": [int(c) for c in colour]}
            for index, (name, colour) in enumerate(zip(names, colours, strict=True))
        ],
        "ignore_label": int(ignore_label),
        "input": {
            "colour_order": "RGB",
            "value_range": [0, 255],
            "normalization": {
                "mode": mode,
                "inside_model": True,
                "formula": _NORMALIZATION.get(mode),
            },
        },
        "output": {"num_classes": num_classes, "align_corners": model_align_corners(model)},
    }
    bands = [layer for layer in normalizations if isinstance(layer, BandNormalization)]
    if bands:
        description["input"] = _band_input(bands[0], mode)
    if training_config is not None:
        description["training"] = {
            "config_sha256": config_digest(training_config),
            **{key: training_config.get(key) for key in ("backbone", "output_stride", "pointrend")},
        }
    return description


def describe_run(model, model_path=None, data=None, ignore_label=255):
    """`describe` with what a run left beside its files: class names and colours from the
    data folder's `classes.json`, and the `config.json` next to a `tfdeeplab train` model."""
    from tfdeeplab.data.folder import read_classes

    names, colours = read_classes(Path(data)) if data else (None, None)
    config = Path(model_path).with_name("config.json") if model_path else None
    training = json.loads(config.read_text()) if config and config.is_file() else None
    if names is not None and len(names) != int(model.output_shape[-1]):
        raise ValueError(
            f"{Path(data) / 'classes.json'}: {len(names)} classes for a model of "
            f"{model.output_shape[-1]}"
        )
    return describe(model, names, colours, ignore_label, training)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def tensor_description(shape, dtype, quantization=None):
    """{"shape" (None for a dynamic dimension), "dtype", and "scale"/"zero_point" if quantized}."""
    described = {"shape": [None if d is None or d < 0 else int(d) for d in shape], "dtype": dtype}
    if quantization and quantization[0]:
        described.update(scale=float(quantization[0]), zero_point=int(quantization[1]))
    return described


def with_tensors(description, input_tensor, output_tensor, output_kind, quantization):
    """`description` with the exported tensors (from `tensor_description`), the output kind
    ("logits" or "mask") and the file's quantization mode."""
    described = json.loads(json.dumps(description))
    described["input"].update(input_tensor)
    described["output"].update(output_tensor, kind=output_kind)
    described["quantization"] = quantization
    return described


def embed_in_tflite(flatbuffer, description):
    """The flatbuffer with `description` as its "tfdeeplab" metadata entry (one it already has
    is replaced); the graph and its weights are unchanged."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    model.metadata = [m for m in model.metadata or [] if _name(m.name) != TFLITE_ENTRY]
    buffer = schema.BufferT()
    buffer.data = list(json.dumps(description, sort_keys=True).encode())
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_ENTRY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(name):
    return name.decode() if isinstance(name, bytes) else name


def read_metadata(path):
    """The metadata of a `.tflite` file or a SavedModel folder written by `converters`, as a
    dict; standard library only.

    Raises:
        ValueError: naming the file when it has no tfdeeplab metadata or is not a TFLite model.
        FileNotFoundError: when `path` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        asset = path / "assets" / SAVED_MODEL_ASSET
        if not asset.is_file():
            raise ValueError(f"{path}: a folder without assets/{SAVED_MODEL_ASSET}")
        return json.loads(asset.read_text())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    data = path.read_bytes()
    if data[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    for name, content in _tflite_metadata_entries(data):
        if name == TFLITE_ENTRY:
            return json.loads(content.decode())
    raise ValueError(f"{path}: no {TFLITE_ENTRY!r} metadata (exported before tfdeeplab 0.1?)")


# The TFLite schema's field numbers (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


def _tflite_metadata_entries(data):
    """(name, bytes) of every model-level metadata entry, read from the raw flatbuffer."""
    model = _uoffset(data, 0)
    buffers = _vector_of_tables(data, model, _MODEL_BUFFERS)
    for entry in _vector_of_tables(data, model, _MODEL_METADATA):
        name = bytes(_vector(data, entry, _METADATA_NAME) or b"").decode()
        index = _scalar(data, entry, _METADATA_BUFFER, "<I")
        buffer = buffers[index]
        content = _vector(data, buffer, _BUFFER_DATA)
        if content is None:  # large models keep buffers after the flatbuffer, by offset
            offset = _scalar(data, buffer, _BUFFER_OFFSET, "<Q")
            content = data[offset : offset + _scalar(data, buffer, _BUFFER_SIZE, "<Q")]
        yield name, bytes(content)


def _uoffset(data, position):
    return position + struct.unpack_from("<I", data, position)[0]


def _field(data, table, field):
    """The position of `field` in `table`, or None when the field is absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vtable_size = struct.unpack_from("<H", data, vtable)[0]
    slot = 4 + 2 * field
    if slot >= vtable_size:
        return None
    offset = struct.unpack_from("<H", data, vtable + slot)[0]
    return table + offset if offset else None


def _scalar(data, table, field, layout):
    position = _field(data, table, field)
    return 0 if position is None else struct.unpack_from(layout, data, position)[0]


def _vector(data, table, field):
    position = _field(data, table, field)
    if position is None:
        return None
    start = _uoffset(data, position)
    length = struct.unpack_from("<I", data, start)[0]
    return memoryview(data)[start + 4 : start + 4 + length]


def _vector_of_tables(data, table, field):
    position = _field(data, table, field)
    if position is None:
        return []
    start = _uoffset(data, position)
    length = struct.unpack_from("<I", data, start)[0]
    return [_uoffset(data, start + 4 + 4 * index) for index in range(length)]
