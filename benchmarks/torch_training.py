"""torchvision's DeepLabV3 training step, the peer rows of `benchmarks.training`.

Runs in an environment with torch and torchvision (`--torch-python`); imports neither
TensorFlow nor this package. The models match ours where torchvision has them:
- ResNet-50 at output stride 8: `deeplabv3_resnet50` (layer3 and layer4 dilated);
- ResNet-50 at output stride 16: the same ResNet-50 with only layer4 dilated and torchvision's
  `DeepLabHead` (its ASPP rates are fixed at 12, 24, 36; the rates change no arithmetic);
- MobileNetV2 at output stride 16: torchvision has no DeepLabV3 on MobileNetV2, so its closest,
  `deeplabv3_mobilenet_v3_large` (its last stage dilated, DeepLabHead on the stride-16 map).
Both sides train without auxiliary heads, with SGD momentum 0.9 and pixel cross-entropy.
"""

import numpy as np

from benchmarks.stats import time_steps

TORCH_MODELS = {
    ("resnet50", 8): "torchvision deeplabv3_resnet50",
    ("resnet50", 16): "torchvision deeplabv3_resnet50, layer4 dilated (OS16)",
    ("mobilenetv2", 16): "torchvision deeplabv3_mobilenet_v3_large",
}


def torch_model(backbone, output_stride, num_classes):
    """torchvision's model for our (backbone, output_stride), untrained."""
    if (backbone, output_stride) not in TORCH_MODELS:
        raise ValueError(
            f"no torchvision counterpart for backbone {backbone!r} at output stride "
            f"{output_stride}; have {sorted(TORCH_MODELS)}"
        )
    from torchvision.models import resnet50, segmentation
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    none = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if (backbone, output_stride) == ("resnet50", 8):
        return segmentation.deeplabv3_resnet50(**none, aux_loss=False)
    if (backbone, output_stride) == ("resnet50", 16):
        body = resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
        features = IntermediateLayerGetter(body, return_layers={"layer4": "out"})
        return segmentation.DeepLabV3(features, DeepLabHead(2048, num_classes))
    return segmentation.deeplabv3_mobilenet_v3_large(**none, aux_loss=False)


def torch_job(job):
    """One timed SGD training step of torchvision's model (a `benchmarks.worker` target)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(job["threads"])
    torch.manual_seed(0)
    model = torch_model(job["backbone"], job["output_stride"], job["num_classes"]).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    size, batch = job["image_size"], job["batch"]
    images = torch.from_numpy(rng.normal(size=(batch, 3, size, size)).astype("float32"))
    labels = torch.from_numpy(rng.integers(0, job["num_classes"], (batch, size, size)))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images)["out"], labels, ignore_index=255)
        loss.backward()
        optimizer.step()
        return float(loss)

    result = time_steps(step, job["warmup_steps"], job["steps"])
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.eval()(images)
    macs = counter.get_total_flops() // 2 // batch
    params = sum(parameter.numel() for parameter in model.parameters())
    versions = {"torch": torch.__version__}
    return {**result, "forward_macs_per_image": int(macs), "params": int(params), **versions}
