"""REPORT.md of `tfdeeplab demo`: every number comes from the JSON files the stages wrote."""

import platform

from tfdeeplab.atomic import atomic_write_bytes


def percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def _facts(training, data, summary, stage_seconds, command):
    from benchmarks.stats import machine

    minutes = sum(stage_seconds.values()) / 60
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stage_seconds.items())
    model = f"DeepLabV3 {training.backbone} (alpha {training.alpha}) OS{training.output_stride}"
    model += " + PointRend" if training.pointrend else ""
    host = machine()
    return "\n".join(
        [
            f"- Command: `{command}`",
            f"- Machine: {host['cpu']}, {host['cores']} cores, Python "
            f"{platform.python_version()}; this run's stages took {minutes:.1f} min ({timings}).",
            f"- Data: `{data}`, {summary['train_images']} training / {summary['val_images']} "
            f"validation images, {summary['num_classes']} classes, trained and evaluated at "
            f"{training.image_size}².",
            f"- Model: {model}, {summary['num_classes']} classes, ASPP rates "
            f"{tuple(summary.get('aspp_rates', ()))} (scaled to the crop).",
        ]
    )


def _training(summary):
    budget = " (stopped by the time budget)" if summary["stopped_by_time_budget"] else ""
    return (
        f"{summary['epochs_run_this_time']} epochs of {summary['steps_per_epoch']} steps in this "
        f"session{' (resumed)' if summary['resumed'] else ''}, "
        f"{summary['wall_seconds'] / 60:.1f} min at {summary['train_images_per_second']:.1f} "
        f"images/s; validation mIoU {percent(summary['final_val_mean_iou'])}% at the end "
        f"(final.keras, evaluated below), {percent(summary['best_val_mean_iou'])}% at the best "
        f"epoch (best.keras){budget}."
    )


def _evaluation(evaluation):
    scores = (
        f"mIoU **{percent(evaluation['mean_iou'])}**, pixel accuracy "
        f"{percent(evaluation['pixel_accuracy'])}, mean boundary F1 "
        f"{percent(evaluation['mean_boundary_f1'])} (percent; boundary tolerance "
        f"{evaluation['boundary_tolerance_px']} px). mIoU: "
        f"{evaluation.get('mean_iou_definition', 'mean over classes')}."
    )
    rows = "\n".join(
        f"| {row['name']} | {percent(row['iou'])} | {percent(row['precision'])} | "
        f"{percent(row['recall'])} | {percent(row['boundary_f1'])} | {row['pixels']} |"
        for row in evaluation["classes"]
    )
    header = "| class | IoU | precision | recall | boundary F1 | pixels |\n" + "| --- " * 6 + "|"
    return f"{scores}\n\n{header}\n{rows}"


def _exports(exports):
    rows = "\n".join(
        f"| {name} | {report['size_bytes'] / 2**20:.2f} | {percent(report['agreement'])} | "
        f"{percent(report['miou_keras'])} | {percent(report['miou_artifact'])} | "
        f"{report['miou_drop_points']:.2f} | {report['max_logit_error']:.3g} |"
        for name, report in exports.items()
    )
    header = (
        "| artifact | MiB | agreement % | mIoU Keras | mIoU artifact | drop (points) "
        "| max logit error |\n" + "| --- " * 7 + "|"
    )
    return f"{header}\n{rows}"


def write_report(
    config, out, data, summary, evaluation, exports, latency_report, stage_seconds, command
):
    """Writes out/REPORT.md (atomically, last: a folder with it holds a finished demo)."""
    from benchmarks.latency import markdown_table

    text = f"""# tfdeeplab demo report

{_facts(config.training, data, summary, stage_seconds, command)}

## Training

{_training(summary)}

![training curve](train/training_curve.png)

## Evaluation of train/final.keras (validation split, {evaluation["images"]} images)

{_evaluation(evaluation)}

![IoU per class](evaluation.png)

![predictions](predictions.png)

## Exports, each verified against Keras on the validation split

{_exports(exports)}

Verification reports: `export/<artifact>.verification.json`.

## Latency (benchmarks.latency, batch 1, {latency_report["settings"]["threads"]} threads)

float32 matmul peak of this machine: {latency_report["matmul_peak_gflops"]:.1f} GFLOP/s.

{markdown_table(latency_report)}

![latency](latency.png)
"""
    return atomic_write_bytes(out / "REPORT.md", text.encode())
