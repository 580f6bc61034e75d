"""Training DeepLabV3 with `model.fit` on folder datasets: the engine behind `tfdeeplab train`.

A run folder holds `config.json`, `best.keras` (best validation mIoU, written atomically),
`final.keras`, `history.csv`, `tensorboard/`, `backup/` (BackupAndRestore: a killed run resumes
from its last finished epoch when started again with the same folder), `training_curve.png` and
`summary.json` (written last; a run folder with it is finished and is not overwritten).
"""

import dataclasses
import json
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from tfdeeplab.atomic import atomic_write_bytes
from tfdeeplab.callbacks import (
    BackboneFreezer,
    BestModelCheckpoint,
    Throughput,
    TimeBudget,
    save_model_atomically,
)
from tfdeeplab.config import Distribution, OptimizerName, TrainConfig
from tfdeeplab.data import Augmentation, make_dataset, scan_split
from tfdeeplab.data.rasters import label_counts, model_input_arguments
from tfdeeplab.deeplabv3 import DeepLabV3
from tfdeeplab.init_model import load_initial_model
from tfdeeplab.layers.aspp import ASPP
from tfdeeplab.losses import SegmentationLoss, class_weights_from_frequencies
from tfdeeplab.metrics import PixelAccuracy, mean_iou
from tfdeeplab.plots import read_history, training_curves
from tfdeeplab.schedules import Replannable, make_schedule
from tfdeeplab.strategy import (
    dtype_policy,
    is_chief,
    make_strategy,
    patch_for_multiworker,
    worker_index,
)


class RunExistsError(FileExistsError):
    """The output folder holds a finished run."""


# Layer attributes holding convolution and dense kernels (Conv2D and Dense, DepthwiseConv2D,
# SeparableConv2D and the atrous layers derived from them).
KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def kernel_variables(model):
    """The convolution and dense kernels of `model`: what DeepLab decays. Frozen ones too: a
    backbone frozen now may be unfrozen later (`--freeze-backbone-epochs`), and Keras counts
    a regularizer only while its variable is trainable."""
    kernels = {}
    for layer in model._flatten_layers(include_self=False):
        for name in KERNEL_ATTRIBUTES:
            variable = getattr(layer, name, None)
            if isinstance(variable, keras.Variable):
                kernels[id(variable)] = variable
    return list(kernels.values())


def make_optimizer(config, schedule, model):
    """The optimizer of `config`, with weight decay on kernels only (not biases, not batch norm).

    SGD: coupled L2 as in the DeepLab paper and torchvision: (weight_decay / 2)·‖W‖² joins the
    loss (Keras regularizers on the kernel variables, scaled per replica like every
    regularizer), so weight_decay·W joins the gradient and passes through momentum. Keras'
    own `SGD(weight_decay=...)` is decoupled and decays every variable, batch-norm scales and
    offsets included; with momentum 0.9 that is about 10× weaker on the kernels.
    AdamW: its decoupled decay (that is what AdamW is), restricted to the kernels.
    The regularizers live on the variables, not in the layer configs: saved models and their
    exports carry no training settings.
    """
    kernels = kernel_variables(model)
    if config.optimizer == OptimizerName.SGD.value:
        regularizer = (
            keras.regularizers.L2(config.weight_decay / 2) if config.weight_decay else None
        )
        for variable in kernels:
            variable.regularizer = regularizer
        return keras.optimizers.SGD(schedule, momentum=config.momentum)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    decayed = {id(variable) for variable in kernels}
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.weights if id(v) not in decayed])
    return optimizer


def prepare_out(config):
    """The run folder of `config` (made; a finished run is cleared only with --overwrite);
    workers other than the chief get their own subfolder."""
    out = Path(config.out)
    summary = out / "summary.json"
    if summary.exists():
        if not config.overwrite:
            raise RunExistsError(
                f"{out} holds a finished run ({summary}); choose another --out or pass --overwrite"
            )
        for name in ("backup", "tensorboard"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("summary.json", "history.csv", "best.keras", "final.keras"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not is_chief():  # other workers write beside the chief, never over its files
        kind, index = worker_index()
        out = out / f"{kind}_{index}"
        out.mkdir(parents=True, exist_ok=True)
    return out


def datasets(config):
    """(train folder, val folder, repeating augmented train dataset, val dataset)."""
    scan = {"num_classes": config.num_classes, "ignore_label": config.ignore_label}
    scan["skip_bad"] = config.skip_bad
    train_folder = scan_split(config.data, "train", config.val_fraction, config.seed, **scan)
    scan["num_classes"] = train_folder.num_classes
    val_folder = scan_split(config.data, "val", config.val_fraction, config.seed, **scan)
    size = (config.image_size, config.image_size)
    train_data = make_dataset(
        train_folder,
        size,
        config.batch_size,
        augment=True,
        cache=config.cache,
        seed=config.seed,
        repeat=True,
        ignore_classes=config.ignore_classes,
        augmentation=Augmentation(min_scale=config.min_scale, max_scale=config.max_scale),
    )
    # Every validation image counts, also with several replicas: `SegmentationModel` runs a
    # replica left without images by a last partial batch on a blank one.
    val_data = make_dataset(
        val_folder,
        size,
        config.batch_size,
        augment=False,
        shuffle=False,
        cache=config.cache,
        ignore_classes=config.ignore_classes,
    )
    return train_folder, val_folder, train_data, val_data


def learning_rate_schedule(config, steps):
    """`config`'s schedule over its epochs of `steps` steps; with a time budget, a
    `Replannable` one whose end the budget moves to where it stops the run."""
    return make_schedule(
        config.schedule,
        config.lr,
        steps * config.epochs,
        int(steps * config.warmup_epochs),
        replannable=bool(config.time_budget_minutes),
    )


def compiled_model(config, train_folder, steps, schedule=None):
    """DeepLabV3 with its optimizer, loss and metrics, in the current scope. `schedule`:
    default `learning_rate_schedule(config, steps)`."""
    num_classes = train_folder.num_classes
    if config.init:
        model = load_initial_model(config, num_classes)
    else:
        model = DeepLabV3(
            num_classes,
            backbone=config.backbone,
            output_stride=config.output_stride,
            alpha=config.alpha,
            aspp_filters=config.aspp_filters,
            aspp_rates=config.aspp_rates,
            backbone_weights=config.backbone_weights,
            batchnorm_momentum=config.batchnorm_momentum,
            pointrend=config.pointrend,
            pointrend_points=config.pointrend_points,
            pointrend_training_points=config.pointrend_training_points,
            pointrend_image_features=config.pointrend_image_features,
            aux_head=config.aux_head,
            decoder=config.decoder,
            crop_size=config.image_size,
            **model_input_arguments(train_folder, config.rgb_bands or None),
        )
    schedule = schedule or learning_rate_schedule(config, steps)
    optimizer = make_optimizer(config, schedule, model)
    # Slots for every variable, so that unfreezing the backbone later needs no rebuild.
    optimizer.build(model.trainable_variables)
    weights = None
    if config.class_weights:
        weights = class_weights_from_frequencies(label_counts(train_folder))
    loss = SegmentationLoss(
        num_classes, config.ignore_label, weights, config.focal_gamma, config.dice_weight
    )
    metrics = [
        mean_iou(num_classes, config.ignore_label, ignore_classes=config.ignore_classes),
        PixelAccuracy(num_classes, config.ignore_label),
    ]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model


def _distribute(model, config, strategy):
    if config.sync_batchnorm and strategy.num_replicas_in_sync > 1:
        # Batch statistics over the global batch (as DeepLab trains across GPUs), which also
        # keeps the moving statistics identical on every replica.
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    if config.distribute == Distribution.MULTIWORKER.value:
        patch_for_multiworker(model)


def training_callbacks(config, out, schedule=None):
    """tfdeeplab's callbacks: {"throughput", "budget" (or None), "early_stopping" (or None),
    "all": the list}. A `Replannable` `schedule` is re-planned by the time budget."""
    budget = None
    if config.time_budget_minutes:
        replannable = schedule if isinstance(schedule, Replannable) else None
        budget = TimeBudget(config.time_budget_minutes, replannable)
    throughput = Throughput(config.batch_size)
    own = [
        throughput,
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.TerminateOnNaN(),
        BestModelCheckpoint(out / "best.keras", "val_mean_iou", "max", enabled=is_chief()),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), update_freq="epoch"),
    ]
    if config.freeze_backbone_epochs:
        own.append(BackboneFreezer(config.freeze_backbone_epochs))
    if budget:
        own.append(budget)
    stopping = None
    if config.early_stopping:
        # Keras' EarlyStopping on the best-model criterion; its count restarts on a resume.
        stopping = keras.callbacks.EarlyStopping(
            "val_mean_iou",
            min_delta=config.min_delta,
            patience=config.patience,
            mode="max",
            restore_best_weights=True,
        )
        own.append(stopping)
    return {"throughput": throughput, "budget": budget, "early_stopping": stopping, "all": own}


def train(config: TrainConfig, callbacks=()):
    """Trains one model; see the module docstring for what the run folder holds.

    Args:
        config: the run's settings.
        callbacks: extra Keras callbacks, run after tfdeeplab's own.

    Returns:
        The summary dict (also `summary.json`): best and final validation metrics, images/s,
        epochs run, wall time, paths.
    """
    # Multi-worker collectives must be configured before TensorFlow runs any op.
    strategy = make_strategy(config.distribute)
    out = prepare_out(config)
    resumed = (out / "backup").exists()
    atomic_write_bytes(
        out / "config.json", json.dumps(dataclasses.asdict(config), indent=2).encode()
    )
    keras.utils.set_random_seed(config.seed)
    train_folder, val_folder, train_data, val_data = datasets(config)
    steps = config.steps_per_epoch or max(1, len(train_folder) // config.batch_size)
    if config.lr == "auto":
        config = dataclasses.replace(config, lr=_found_learning_rate(config, out, strategy))
        keras.utils.set_random_seed(config.seed)  # the same initialisation as a set rate's
    with dtype_policy(config.mixed_precision), strategy.scope():
        schedule = learning_rate_schedule(config, steps)
        model = compiled_model(config, train_folder, steps, schedule)
    aspp_rates = next(layer.rates for layer in model.layers if isinstance(layer, ASPP))
    if not config.init:  # an --init model keeps its own rates and stride
        print(
            f"ASPP rates {aspp_rates} for {config.image_size}² crops at output stride "
            f"{config.output_stride} (a {-(-config.image_size // config.output_stride)}-cell map)"
        )
    _distribute(model, config, strategy)
    own = training_callbacks(config, out, schedule)
    start = time.monotonic()
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=own["all"] + list(callbacks),
        shuffle=False,  # the dataset reshuffles its files every epoch
        verbose=config.verbose,
    )
    seconds = time.monotonic() - start
    save_model_atomically(model, out / "final.keras")
    logs = history.history
    summary = {
        "resumed": resumed,
        "epochs_run_this_time": len(logs.get("loss", [])),
        "steps_per_epoch": steps,
        "train_images": len(train_folder),
        "val_images": len(val_folder),
        "num_classes": train_folder.num_classes,
        "aspp_rates": list(aspp_rates),
        "class_names": list(train_folder.class_names),
        "wall_seconds": seconds,
        "train_images_per_second": own["throughput"].images_per_second,
        "best_val_mean_iou": max(logs["val_mean_iou"]) if logs.get("val_mean_iou") else None,
        "final_val_mean_iou": logs["val_mean_iou"][-1] if logs.get("val_mean_iou") else None,
        **_how_it_stopped(config, steps, own, model),
        "best_model": str(out / "best.keras"),
        "final_model": str(out / "final.keras"),
    }
    _write_curve(out)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def find_learning_rate(config, steps=200, min_lr=1e-6, max_lr=1.0, strategy=None):
    """The learning-rate range test (`tfdeeplab.lr_finder`) of `config`'s model, optimizer,
    loss and augmented training data, on a fresh model; writes lr_find.json and lr_find.png
    in `config.out` and returns the result (with "suggested_lr")."""
    from tfdeeplab.lr_finder import sweep, write_sweep

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    train_folder, _, train_data, _ = datasets(config)
    with dtype_policy(config.mixed_precision), (strategy or tf.distribute.get_strategy()).scope():
        model = compiled_model(config, train_folder, 1, schedule=float(min_lr))
    print(f"Learning-rate range test: {min_lr:g} to {max_lr:g} over up to {steps} steps")
    result = sweep(model, train_data, steps, min_lr, max_lr)
    result.update(min_lr=float(min_lr), max_lr=float(max_lr), batch_size=config.batch_size)
    write_sweep(result, out, f"Learning-rate range test ({config.optimizer}, {config.backbone})")
    print(
        f"Suggested learning rate: {result['suggested_lr']:.3g} (lowest smoothed loss at "
        f"{result['min_loss_lr']:.3g}); curve: {out / 'lr_find.png'}"
    )
    return result


def _found_learning_rate(config, out, strategy):
    """`train --lr auto`: the range test's suggestion, from out/lr_find.json when a resumed
    run has one."""
    found = out / "lr_find.json"
    if found.exists():
        return json.loads(found.read_text())["suggested_lr"]
    auto = dataclasses.replace(config, out=str(out))
    return find_learning_rate(auto, strategy=strategy)["suggested_lr"]


def _how_it_stopped(config, steps, own, model):
    """Summary entries on the time budget, early stopping and the schedule's steps."""
    budget, stopping = own["budget"], own["early_stopping"]
    planned = budget.planned_steps if budget is not None else None
    return {
        "stopped_by_time_budget": bool(budget and budget.stopped_at_epoch is not None),
        # The epoch (from 0) at which EarlyStopping stopped the run, or None.
        "stopped_early_at_epoch": stopping.stopped_epoch
        if stopping and stopping.stopped_epoch
        else None,
        "schedule": config.schedule,
        "learning_rate": config.lr,
        "designed_steps": steps * config.epochs,
        # Where the time budget last planned the schedule's end (None without a budget).
        "planned_steps": round(planned) if planned is not None else None,
        "steps_run": int(model.optimizer.iterations.numpy()),
    }


def _write_curve(out):
    """training_curve.png from history.csv (all epochs, also those of earlier attempts)."""
    path = out / "history.csv"
    history = read_history(path) if path.exists() else {}
    if "epoch" not in history:
        return None
    return training_curves(out / "training_curve.png", history, f"Training curve ({out.name})")
