"""Settings of training and of the demo, as dataclasses whose fields declare each option once
(name, type, default, help; see `tfdeeplab.options`). Importing this module loads neither Keras
nor TensorFlow, so that the command line can build its options before TensorFlow starts.
"""

import dataclasses
import enum
from pathlib import Path

from tfdeeplab.options import int_list, parse_aspp_rates, setting


class OptimizerName(str, enum.Enum):
    SGD = "sgd"
    ADAMW = "adamw"


class Distribution(str, enum.Enum):
    NONE = "none"
    MIRRORED = "mirrored"
    MULTIWORKER = "multiworker"
    TPU = "tpu"


def learning_rate(value):
    """A positive learning rate, or "auto"."""
    if value == "auto":
        return value
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = None
    if rate is None or not rate > 0:
        raise ValueError(f"lr={value!r} must be a positive number or 'auto'")
    return rate


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (the `tfdeeplab train` options)."""

    data: str = setting(help="folder with images/ and masks/")
    out: str = setting(help="run folder (resumes if interrupted)")
    init: str | None = setting(
        None,
        "a .keras model to start from, architecture and weights (e.g. from tfdeeplab "
        "import-torchvision); the architecture options below are then not used, except "
        "--pointrend, which adds a PointRend head to a model without one",
    )
    backbone: str = setting("mobilenetv2", "feature extractor (see tfdeeplab.BACKBONES)")
    output_stride: int = setting(16, "stride of the ASPP features", choices=(8, 16, 32))
    alpha: float = setting(1.0, "MobileNetV2 width multiplier")
    backbone_weights: str | None = setting(None, "imagenet or a weights file")
    rgb_bands: tuple = setting(
        (), "multispectral data: the bands that are R, G, B, e.g. 3,2,1 (default 0,1,2)",
        parse=int_list,
    )  # fmt: skip
    aspp_filters: int = setting(256, "channels of every ASPP branch")
    aspp_rates: str | tuple = setting(
        "auto",
        "rates of ASPP's 3×3 branches: auto (scaled to the crop), none (image pooling + 1×1 "
        "branch only: DeepLab's mobile head), or e.g. 6,12,18",
        parse=parse_aspp_rates,
    )
    batchnorm_momentum: float = setting(
        0.9,
        "BatchNorm momentum of every layer (0.9 = PyTorch's 0.1); keras.applications' 0.999 "
        "lags far behind when training from scratch",
    )
    pointrend: bool = setting(False, "add a PointRend head")
    pointrend_points: int | None = setting(
        None, "points per subdivision step; default: one per 4×4 pixels"
    )
    pointrend_training_points: int | None = setting(
        None, "PointRend points per training image; default: the coarse map's cells"
    )
    pointrend_image_features: bool = setting(
        True, "PointRend's point head also reads the image's pixels at each point"
    )
    decoder: bool = setting(
        False, "DeepLabV3+ decoder: ASPP features merged with the stride-4 features"
    )
    aux_head: bool = setting(
        False, "auxiliary FCN head on the stride-16 features, weight 0.4, training only"
    )
    num_classes: int | None = setting(None, "default: from the data folder")
    ignore_label: int = setting(255, "mask value without a loss")
    ignore_classes: tuple = setting(
        (), "class values left out of loss and metrics, e.g. 0,5", parse=int_list
    )
    image_size: int = setting(513, "training crop size")
    batch_size: int = setting(8, "images per step")
    epochs: int = setting(30, "epochs")
    steps_per_epoch: int | None = setting(None, "default: one pass over the training images")
    lr: float | str | None = setting(
        None,
        "peak learning rate, or auto (the lr-find range test's suggestion); default 0.01 "
        "(sgd), 1e-3 (adamw)",
        parse=learning_rate,
    )
    optimizer: str = setting("sgd", "optimizer", choices=("sgd", "adamw"))
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "on kernels only: coupled L2 with sgd, decoupled adamw")
    schedule: str = setting(
        "poly", "learning-rate schedule", choices=("poly", "cosine", "one-cycle")
    )
    warmup_epochs: float = setting(0.0, "linear learning-rate warm-up (poly, cosine)")
    freeze_backbone_epochs: int = setting(0, "epochs with a frozen backbone first")
    min_scale: float = setting(0.5, "smallest random scale of training views (DeepLab: 0.5)")
    max_scale: float = setting(2.0, "largest random scale of training views (DeepLab: 2.0)")
    class_weights: bool = setting(False, "median-frequency class weights")
    focal_gamma: float = setting(0.0, "focal loss gamma (0: cross-entropy)")
    dice_weight: float = setting(0.0, "weight of an added Dice loss")
    mixed_precision: bool = setting(False, "mixed_float16 compute, float32 logits")
    distribute: str = setting(
        "none", "tf.distribute strategy", choices=("none", "mirrored", "multiworker", "tpu")
    )
    sync_batchnorm: bool = setting(True, "synchronized batch statistics when distributing")
    val_fraction: float = setting(0.1, "validation share without a val/ folder")
    seed: int = setting(0, "split, shuffle and initialisation seed")
    cache: bool = setting(False, "cache decoded files in memory")
    skip_bad: bool = setting(False, "warn about bad pairs and skip them")
    time_budget_minutes: float | None = setting(
        None, "stop training after this many minutes; the schedule is re-planned to end then"
    )
    early_stopping: bool = setting(
        False, "stop once val mIoU stops improving (--patience, --min-delta); keep the best weights"
    )
    patience: int = setting(5, "epochs without a val mIoU gain before --early-stopping stops")
    min_delta: float = setting(0.0, "the smallest val mIoU gain that counts as one")
    overwrite: bool = setting(False, "replace a finished run")
    # Keras' fit verbosity (Python API only; the command line's --verbose is TensorFlow's log).
    verbose: int | str = "auto"

    def __post_init__(self):
        from tfdeeplab.backbones import backbone_names

        if self.backbone not in backbone_names():
            raise ValueError(
                f"backbone={self.backbone!r} is not supported; choose one of "
                f"{sorted(backbone_names())}"
            )
        # Paths as strings: config.json and summary.json are JSON.
        self.data, self.out = str(self.data), str(self.out)
        self.ignore_classes = tuple(int(c) for c in self.ignore_classes)
        self.rgb_bands = tuple(int(b) for b in self.rgb_bands)
        self.optimizer = OptimizerName(self.optimizer).value
        self.distribute = Distribution(self.distribute).value
        if self.lr is None:
            self.lr = 0.01 if self.optimizer == OptimizerName.SGD.value else 1e-3
        self.lr = learning_rate(self.lr)
        for name in ("image_size", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 1")
        if self.patience < 0 or self.min_delta < 0:
            raise ValueError(f"patience={self.patience} and min_delta={self.min_delta} must be ≥ 0")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"min_scale={self.min_scale} and max_scale={self.max_scale} must satisfy "
                "0 < min_scale ≤ max_scale"
            )


@dataclasses.dataclass(kw_only=True)
class LrFindOptions:
    """The range test's own settings (`tfdeeplab lr-find`; `train --lr auto` uses the
    defaults)."""

    sweep_steps: int = setting(200, "steps of the exponential learning-rate sweep")
    min_lr: float = setting(1e-6, "the sweep's first learning rate")
    max_lr: float = setting(1.0, "the sweep's last learning rate")


# What the demo changes of `TrainConfig`'s defaults: DeepLabV3 + PointRend at 193², trained for
# 10 minutes (the cap) on a poly schedule planned to end with the budget (more epochs
# than the budget allows, so the budget decides). On the demo's data, benchmarks.quality
# measured mIoU 58.7 after 8 minutes this way (551 steps), against 46.9 for the earlier 6
# epochs (198 steps): in these short runs more steps is the surest gain.
# AdamW at 8e-3, not its 1e-3 default: on seed-1 scenes (never the demo's own), 5-minute runs
# at 2.5e-4 … 1.6e-2 scored mIoU 47.3, 53.7, 57.2, 61.6, 61.3, 67.5 (8e-3), 62.6, and the thin
# `line` class 0.2 … 35.0 (at 8e-3); lr-find suggests 4.7e-3 on the same data.
DEMO_TRAINING = {
    "pointrend": True,
    "image_size": 193,
    "epochs": 60,
    "lr": 0.008,
    "optimizer": "adamw",
    "time_budget_minutes": 10.0,
}
# The training settings `tfdeeplab demo` takes on its command line (the others keep their
# defaults; `tfdeeplab train` takes them all).
DEMO_TRAINING_OPTIONS = (
    "backbone",
    "alpha",
    "output_stride",
    "aspp_rates",
    "pointrend",
    "decoder",
    "aux_head",
    "class_weights",
    "min_scale",
    "max_scale",
    "image_size",
    "batch_size",
    "epochs",
    "steps_per_epoch",
    "lr",
    "optimizer",
    "time_budget_minutes",
    "val_fraction",
    "seed",
)


def demo_training(**settings):
    """A `TrainConfig` with the demo's defaults; `DemoConfig` fills in its data and out."""
    return TrainConfig(data="", out="", **{**DEMO_TRAINING, **settings})


@dataclasses.dataclass
class DemoConfig:
    """Settings of `tfdeeplab demo` (its command-line options): the demo's own, and the
    training run's as a `TrainConfig` (`training`, see `demo_training`), whose data and out
    the demo sets: `data` (or the generated scenes in out/data) and out/train. The scenes are
    generated at the training crop size."""

    out: str = setting("runs/demo", "output folder (resumes if interrupted)")
    data: str | None = setting(None, "your folder dataset; default: generated synthetic scenes")
    num_images: int = setting(300, "generated scenes")
    num_classes: int = setting(6, "classes of generated scenes")
    calibration_steps: int = setting(50, "int8 calibration images")
    verify_images: int | None = setting(None, "images per verification; default: all val")
    qat: bool = setting(False, "also quantization-aware training")
    qat_epochs: int = setting(1, "QAT fine-tuning epochs")
    benchmark_runs: int = setting(20, "timed runs per artifact")
    threads: int | None = setting(None, "benchmark threads; default: every core")
    overwrite: bool = setting(False, "replace a finished demo")
    training: TrainConfig = dataclasses.field(default_factory=demo_training)
    verbose: int | str = "auto"  # Keras' fit verbosity

    def __post_init__(self):
        if not 2 <= self.num_classes <= 255:
            raise ValueError(f"num_classes={self.num_classes} must be an integer from 2 to 255")
        for name in ("num_images", "benchmark_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 1")
        out = Path(self.out)
        self.training = dataclasses.replace(
            self.training,
            data=str(self.data or out / "data"),
            out=str(out / "train"),
            verbose=self.verbose,
        )
