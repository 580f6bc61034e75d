"""The reference fixture of `tfdeeplab.from_torchvision`: what real torchvision computes.

    /path/to/torch-env/bin/python -m benchmarks.torchvision_fixture

Run in an environment with torch and torchvision (not tfdeeplab's: this module imports neither
TensorFlow nor tfdeeplab). For each of torchvision's DeepLabV3 builders
(`weights=None, weights_backbone=None, num_classes=21, aux_loss=True`) it writes to
`tests/fixtures/torchvision/`:

- `<arch>.json`: torchvision's version, every state-dict key with its shape, and a checksum
  of the weights `seeded_state_dict` fills them with;
- `<arch>.npz`: two fixed uint8 images (97×97 and 130×98), and torchvision's outputs for them
  in eval mode: the logits and the auxiliary logits on every 4th row and column (NHWC), the
  argmax of the logits at every pixel, and the largest |logit|.

The weights are not stored: `seeded_state_dict` (numpy only) regenerates them from the key
names and shapes, so the tests need neither torch nor a large file. BatchNorm running
statistics are random too (variances in [0.05, 1]), so a wrong epsilon or a statistic left at
its default changes the logits well beyond the tests' tolerance.
"""

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

ARCHS = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large")
NUM_CLASSES = 21
SIZES = ((97, 97), (130, 98))  # (H, W)
SEED = 2026
STRIDE = 4  # rows and columns of the stored logits
# Scales every convolution kernel of an arch, chosen so that its random network keeps logits of
# order 1-20 (BatchNorm with random statistics does not normalise: without it, activations
# grow layer by layer, to |logits| ~ 1e13 through ResNet-101).
GAINS = {
    "deeplabv3_resnet50": 0.62,
    "deeplabv3_resnet101": 0.55,
    "deeplabv3_mobilenet_v3_large": 0.75,
}
FOLDER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torchvision"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _rng(key):
    return np.random.default_rng([SEED, zlib.crc32(key.encode())])


def seeded_state_dict(shapes, gain=1.0):
    """{key: float32 array (int64 for num_batches_tracked)} for torchvision's `shapes`, each
    drawn from its own generator seeded by the key's name (order-independent).

    Convolution kernels: N(0, gain² / fan_in); their biases N(0, 0.1); BatchNorm weight
    U(0.5, 1.5), bias N(0, 0.2), running_mean N(0, 0.2), running_var U(0.05, 1).
    """
    state = {}
    for key, shape in shapes.items():
        rng, shape = _rng(key), tuple(shape)
        owner, _, leaf = key.rpartition(".")
        batch_norm = f"{owner}.running_mean" in shapes
        if leaf == "num_batches_tracked":
            state[key] = np.zeros(shape, np.int64)
            continue
        if leaf == "running_var":
            value = rng.uniform(0.05, 1.0, shape)
        elif leaf == "running_mean":
            value = rng.normal(0.0, 0.2, shape)
        elif leaf == "weight" and batch_norm:
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "bias":
            value = rng.normal(0.0, 0.2 if batch_norm else 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, gain / np.sqrt(fan_in), shape)
        state[key] = value.astype(np.float32)
    return state


def checksum(state):
    """Σ|w| over every float array: tells whether `seeded_state_dict` still draws what it drew
    when the fixture was made."""
    return float(
        sum(np.abs(v).sum(dtype=np.float64) for v in state.values() if v.dtype.kind == "f")
    )


def seeded_images():
    """The fixture's two uint8 RGB images, (H, W, 3) at `SIZES`."""
    rng = np.random.default_rng(SEED)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _torch_outputs(model, image):
    import torch

    normalized = (image.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    batch = torch.from_numpy(normalized.transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        outputs = model(batch)
    return {k: v[0].permute(1, 2, 0).numpy() for k, v in outputs.items()}


def write_fixture(arch, folder=FOLDER):
    import torch
    import torchvision

    torch.manual_seed(0)
    builder = getattr(torchvision.models.segmentation, arch)
    model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    state = seeded_state_dict(shapes, GAINS[arch])
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.eval()
    arrays = {}
    for index, image in enumerate(seeded_images()):
        outputs = _torch_outputs(model, image)
        arrays[f"image{index}"] = image
        arrays[f"logits{index}"] = outputs["out"][::STRIDE, ::STRIDE]
        arrays[f"aux{index}"] = outputs["aux"][::STRIDE, ::STRIDE]
        arrays[f"argmax{index}"] = outputs["out"].argmax(-1).astype(np.uint8)
        arrays[f"scale{index}"] = np.float32(np.abs(outputs["out"]).max())
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{arch}.npz", **arrays)
    meta = {
        "arch": arch,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "num_classes": NUM_CLASSES,
        "sizes": SIZES,
        "stride": STRIDE,
        "seed": SEED,
        "gain": GAINS[arch],
        "checksum": checksum(state),
        "shapes": shapes,
    }
    (folder / f"{arch}.json").write_text(json.dumps(meta, indent=1) + "\n")
    scales = [float(arrays[f"scale{i}"]) for i in range(len(SIZES))]
    print(f"{arch}: {len(shapes)} keys, max |logit| {scales}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--out", type=Path, default=FOLDER)
    args = parser.parse_args(argv)
    for arch in args.archs:
        write_fixture(arch, args.out)


if __name__ == "__main__":
    main()
