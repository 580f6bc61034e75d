"""torchvision's DeepLabV3 trained for a wall-clock budget: the peer of `benchmarks.quality`.

Runs in an environment with torch and torchvision (`--torch-python`); imports neither
TensorFlow nor this package. It trains on the file lists the benchmark passes, with
torchvision's reference recipe (references/segmentation): SGD momentum 0.9, weight decay
1e-4, poly learning rate (power 0.9), and its training preset's augmentation (random resize to
0.5–2× , horizontal flip, crop padded with 0 / the ignore label, ImageNet normalisation),
written here with PIL and numpy. The poly schedule is planned over the steps the budget
allows, measured after the first epoch (as `tfdeeplab train --time-budget-minutes` does), so
both sides anneal by the end of their budget. It predicts every validation image at its
original resolution and saves the class maps; the benchmark scores them with tfdeeplab's
metrics, as it scores its own models.
"""

import time

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _read(path, mode):
    from PIL import Image

    with Image.open(path) as picture:
        return np.asarray(picture.convert(mode) if mode == "RGB" else picture)


def _augment(image, mask, crop, ignore_label, rng):
    """torchvision's SegmentationPresetTrain on one pair: random resize, flip, pad, crop."""
    from PIL import Image

    scale = rng.uniform(0.5, 2.0)
    height, width = mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    pad_h, pad_w = max(crop - mask.shape[0], 0), max(crop - mask.shape[1], 0)
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=ignore_label)
    top = rng.integers(0, mask.shape[0] - crop + 1)
    left = rng.integers(0, mask.shape[1] - crop + 1)
    return image[top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]


def _tensor(images):
    import torch

    x = (np.asarray(images, np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _model(name, num_classes, bn_momentum=None):
    """torchvision's model, untrained; `bn_momentum` (PyTorch's convention) replaces every
    BatchNorm's (torchvision's MobileNetV3 uses 0.01: its running statistics still lag far
    behind the weights after a few hundred steps, and the model in eval mode predicts
    almost one class)."""
    import torch
    from torchvision.models import segmentation

    none = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    builders = {
        "mobilenet_v3": segmentation.deeplabv3_mobilenet_v3_large,
        "resnet50": segmentation.deeplabv3_resnet50,
    }
    model = builders[name](**none, aux_loss=False)
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = bn_momentum
    return model


def _train(model, job, pairs, rng):
    """Trains until the budget; returns (steps, epochs, images/s, seconds)."""
    import torch
    import torch.nn.functional as F

    lr, budget = job["lr"], job["budget_minutes"] * 60
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    batch, crop = job["batch_size"], job["image_size"]
    per_epoch = max(1, len(pairs) // batch)
    planned, steps, epochs, step_seconds, start = None, 0, 0, 0.0, time.monotonic()
    model.train()
    while planned is None or steps < planned:
        order = rng.permutation(len(pairs))
        for index in range(per_epoch):
            if planned is not None and steps >= planned:
                break
            chosen = order[index * batch : (index + 1) * batch]
            views = [_augment(*pairs[i], crop, job["ignore_label"], rng) for i in chosen]
            images = _tensor([v[0] for v in views])
            labels = torch.from_numpy(np.stack([v[1] for v in views]).astype(np.int64))
            progress = min(steps / planned, 1.0) if planned else 0.0
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 - progress) ** 0.9
            tick = time.perf_counter()
            loss = F.cross_entropy(model(images)["out"], labels, ignore_index=job["ignore_label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step_seconds += time.perf_counter() - tick if steps else 0.0
            steps += 1
            if time.monotonic() - start >= budget:
                planned = steps
                break
        epochs += 1
        if planned is None or planned > steps:  # re-planned after every epoch
            elapsed = time.monotonic() - start
            planned = steps + int(max(budget - elapsed, 0) / (elapsed / steps))
        print(f"epoch {epochs}: {steps} steps, loss {loss.item():.3f}, plan {planned}", flush=True)
    images_per_second = (steps - 1) * batch / step_seconds if steps > 1 else None
    return steps, epochs, images_per_second, time.monotonic() - start


def torch_quality_job(job):
    """Trains torchvision's model for the budget and predicts the validation images (a
    `benchmarks.worker` target). Returns its training figures and the predictions' file."""
    import torch

    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(job["threads"])
    torch.manual_seed(job["seed"])
    rng = np.random.default_rng(job["seed"])
    model = _model(job["model"], job["num_classes"], job.get("bn_momentum"))
    pairs = [(_read(i, "RGB"), _read(m, "L")) for i, m in zip(*job["train"], strict=True)]
    steps, epochs, images_per_second, seconds = _train(model, job, pairs, rng)
    model.eval()
    predictions = []
    with torch.no_grad():
        for path in job["val_images"]:
            logits = model(_tensor(_read(path, "RGB")[None]))["out"]
            predictions.append(logits.argmax(1)[0].numpy().astype(np.uint8))
    np.savez_compressed(job["predictions"], *predictions)
    return {
        "steps": steps,
        "epochs": epochs,
        "train_seconds": seconds,
        "train_images_per_second": images_per_second,
        "predictions": job["predictions"],
    }
