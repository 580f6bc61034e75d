"""PyTorch state dicts: read them from any of the usual files, and copy them into Keras layers
with every key and shape checked.

PyTorch stores convolution kernels as (O, I, kh, kw) and depthwise ones as (C, 1, kh, kw);
Keras as (kh, kw, I, O) and (kh, kw, C, 1). BatchNorm's weight, bias, running_mean and
running_var are Keras' gamma, beta, moving_mean and moving_variance; `num_batches_tracked`
has no Keras counterpart (it only matters for momentum=None in PyTorch) and is accepted and
dropped.
"""

from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors", ".npz")
IGNORED_SUFFIX = ".num_batches_tracked"


class StateDictError(ValueError):
    """A state dict whose keys or shapes do not fit the model: the message names them."""


def names_torchvision_weights(weights):
    """Whether `weights` names a member of a torchvision weights enum (e.g.
    "COCO_WITH_VOC_LABELS_V1", "IMAGENET1K_V2") rather than a file."""
    return isinstance(weights, str) and weights.isidentifier() and weights.isupper()


def _as_array(name, value):
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise StateDictError(f"state dict entry {name!r} is not an array: {type(value).__name__}")
    return array


def read_state_dict(weights):
    """{key: numpy array} from `weights`.

    Args:
        weights: a mapping key → array (numpy arrays or torch tensors), or the path of a
            `.pth`/`.pt` file (`torch.save` of a state dict, or of a checkpoint dict holding it
            under "model", as torchvision's reference scripts write; needs torch), a
            `.safetensors` file (needs the `safetensors` package) or an `.npz` of the state
            dict (numpy only).
    """
    if isinstance(weights, Mapping):
        return {str(key): _as_array(key, value) for key, value in weights.items()}
    path = Path(weights)
    if path.suffix not in SUFFIXES:
        raise ValueError(
            f"weights={str(weights)!r}: unknown file type {path.suffix!r}; choose a "
            f"{', '.join(SUFFIXES)} file or pass a mapping name → array"
        )
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as saved:
            return {key: saved[key] for key in saved.files}
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError(
                f"reading {path} needs the safetensors package: pip install safetensors"
            ) from None
        return load_file(str(path))
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch), or convert it once to .npz "
            "where torch is installed: numpy.savez(out, **{k: v.numpy() for k, v in "
            "torch.load(path).items()})"
        ) from None
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    return read_state_dict(loaded)


def _targets(layer):
    """{state-dict suffix: (Keras variable, PyTorch shape, numpy → Keras layout)} of a layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        variables = {
            "weight": layer.gamma,
            "bias": layer.beta,
            "running_mean": layer.moving_mean,
            "running_var": layer.moving_variance,
        }
        return {key: (v, tuple(v.shape), lambda a: a) for key, v in variables.items()}
    kh, kw, channels, last = layer.kernel.shape
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = (layer.kernel, (channels, last, kh, kw), lambda a: a.transpose(2, 3, 0, 1))
    elif isinstance(layer, keras.layers.Conv2D):
        kernel = (layer.kernel, (last, channels, kh, kw), lambda a: a.transpose(2, 3, 1, 0))
    else:
        raise TypeError(f"layer '{layer.name}' ({type(layer).__name__}) takes no state dict")
    targets = {"weight": kernel}
    if layer.use_bias:
        targets["bias"] = (layer.bias, tuple(layer.bias.shape), lambda a: a)
    return targets


def load_state_dict(slots, state, ignored_prefixes=()):
    """Copies `state` into the layers of `slots` ({key prefix: Keras layer}).

    Every key of `state` must belong to a slot (or start with one of `ignored_prefixes`, or be
    a BatchNorm's `num_batches_tracked`), every slot's keys must be in `state`, and every shape
    must match: otherwise a `StateDictError` lists each offending key with the shape expected.
    Nothing is assigned unless everything fits.
    """
    expected, problems = {}, []
    for prefix, layer in slots.items():
        for suffix, target in _targets(layer).items():
            expected[f"{prefix}.{suffix}"] = target
    for key, (_, shape, _) in expected.items():
        if key not in state:
            problems.append(f"missing key {key!r} (expected shape {shape})")
        elif tuple(state[key].shape) != shape:
            problems.append(f"key {key!r} has shape {tuple(state[key].shape)}, expected {shape}")
    for key in state:
        if key in expected or key.startswith(tuple(ignored_prefixes)):
            continue
        if key.endswith(IGNORED_SUFFIX) and key.removesuffix(IGNORED_SUFFIX) in slots:
            continue
        problems.append(f"unexpected key {key!r} (shape {tuple(state[key].shape)})")
    if problems:  # the first line stands alone (the command line prints only it)
        listed = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise StateDictError(
            f"the state dict does not fit the model ({len(problems)} problems): {problems[0]}"
            f"\n  {listed}{more}"
        )
    for key, (variable, _, layout) in expected.items():
        variable.assign(layout(np.asarray(state[key], np.float32)))
