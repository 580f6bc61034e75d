"""Imagery as remote-sensing users have it: what the fourth band buys, and tiled prediction of
whole GeoTIFF rasters in bounded memory.

    python -m benchmarks.rasters --work runs/rasters

1. Quality: `multispectral_scenes` (16-bit R, G, B, near-infrared; class "vegetation" has the
   background's colours and shows only in near-infrared) written with 3 and with 4 bands; the
   same `tfdeeplab train` command and time budget on each; `final.keras` scored on each run's
   validation split.
2. Memory: `tfdeeplab predict --tile 512 --overlap 64` of the 4-band model on generated
   georeferenced 4-band 16-bit mosaics of `--sizes` pixels a side, each in a fresh process
   whose peak resident memory (getrusage) is recorded.
3. Speed: windows per second of the Keras model, its TFLite fp32 and int8 exports (4-band
   input, 512²) on the smallest mosaic.
4. Seams: on an in-memory mosaic, the tiled probabilities against whole-image inference, on
   the lines where windows start and end, with blending (`--overlap`) and with abutting
   windows (overlap 0).

Writes `--out` (RASTERS.md), its JSON and a PNG (a crop of the smallest mosaic: R, G, B;
near-infrared; the predicted classes; the truth).
"""

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.stats import generated_by, machine, percent, write_report
from benchmarks.worker import run_in_subprocess

SCENE = 128
RECIPE = ["--backbone", "mobilenetv2", "--alpha", "0.5", "--image-size", "129",
          "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.003", "--epochs", "100",
          "--no-pointrend", "--batchnorm-momentum", "0.9"]  # fmt: skip


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cli_job(job):
    """`tfdeeplab <arguments>` in this process; its seconds and peak resident memory."""
    from tfdeeplab.cli import main

    started = time.perf_counter()
    code = main(job["arguments"])
    if code != 0:
        raise RuntimeError(f"tfdeeplab {shlex.join(job['arguments'])} exited with {code}")
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}


def speed_job(job):
    """Seconds of `predict_tiled` alone (artifact loaded, one window run first) over a raster
    file, GeoTIFF written."""
    import keras

    from tfdeeplab import predict_tiled

    artifact = job["artifact"]
    if artifact.endswith(".keras"):
        artifact = keras.saving.load_model(artifact)
    warm = np.zeros((job["tile"], job["tile"], 4), np.float32)
    predict_tiled(artifact, warm, job["tile"], job["overlap"], progress=False)
    started = time.perf_counter()
    result = predict_tiled(artifact, job["image"], job["tile"], job["overlap"], out=job["out"],
                           progress=False)  # fmt: skip
    return {"seconds": time.perf_counter() - started, "windows": result["tiles"]}


def _scene_block(index, seed, bands):
    from tfdeeplab.data.synthetic import render_multispectral_scene

    pixels, mask = render_multispectral_scene(seed * 1_000_003 + index, (SCENE, SCENE), 5, seed)
    return np.round(pixels[..., :bands] * 257).astype(np.uint16), mask


def mosaic_job(job):
    """A size² georeferenced 16-bit GeoTIFF of scenes (and its label raster), written block by
    block, never whole in memory."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    size, bands = job["size"], job["bands"]
    profile = {"driver": "GTiff", "height": size, "width": size, "crs": "EPSG:32633",
               "transform": from_origin(500_000, 4_100_000, 10, 10), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}  # fmt: skip
    with (
        rasterio.open(job["image"], "w", count=bands, dtype="uint16", **profile) as image,
        rasterio.open(job["labels"], "w", count=1, dtype="uint8", **profile) as labels,
    ):
        blocks = -(-size // SCENE)
        for row in range(blocks):
            for column in range(blocks):
                pixels, mask = _scene_block(row * blocks + column, job["seed"], bands)
                height = min(SCENE, size - row * SCENE)
                width = min(SCENE, size - column * SCENE)
                window = Window(column * SCENE, row * SCENE, width, height)
                image.write(np.moveaxis(pixels[:height, :width], -1, 0), window=window)
                labels.write(mask[None, :height, :width], window=window)
    return {"peak_rss_mb": _peak_rss_mb()}


def seam_job(job):
    """Tiled vs whole-image probabilities of the Keras model on an in-memory mosaic."""
    import keras

    from tfdeeplab import predict_tiled
    from tfdeeplab.tiling import seam_error

    model = keras.saving.load_model(job["model"])
    blocks = job["size"] // SCENE
    rows = [
        np.concatenate([_scene_block(r * blocks + c, 99, 4)[0] for c in range(blocks)], axis=1)
        for r in range(blocks)
    ]
    image = np.concatenate(rows, axis=0).astype(np.float32)
    logits = np.asarray(model.predict_on_batch(image[None]))[0]
    whole = np.exp(logits - logits.max(-1, keepdims=True))
    whole /= whole.sum(-1, keepdims=True)
    result = {}
    for overlap in (job["overlap"], 0):
        tiled = predict_tiled(model, image, job["tile"], overlap, probabilities=True,
                              progress=False)  # fmt: skip
        errors = seam_error(tiled["probabilities"], whole, job["tile"], overlap)
        agreement = float((tiled["classes"] == whole.argmax(-1)).mean())
        result[f"overlap_{overlap}"] = {**errors, "argmax_agreement": agreement}
    return result


def _run(target, job, what):
    print(f"[rasters] {what}", flush=True)
    return run_in_subprocess(f"benchmarks.rasters:{target}", job, what, onednn=True)


def _quality(args, work):
    from tfdeeplab.data.synthetic import multispectral_scenes

    quality = {}
    for bands in (3, 4):
        data = work / f"scenes_{bands}band"
        if not (data / "esri_model_definition.emd").exists():
            multispectral_scenes(data, args.num_images, SCENE, seed=0, bands=bands)
        run = work / f"train_{bands}band"
        if not (run / "final.keras").exists():
            arguments = ["train", "--data", str(data), "--out", str(run), *RECIPE,
                         "--time-budget-minutes", str(args.minutes), "--overwrite"]  # fmt: skip
            _run("cli_job", {"arguments": arguments}, f"training on {bands} bands")
        report = run / "final.eval.json"
        arguments = ["evaluate", "--model", str(run / "final.keras"), "--data", str(data),
                     "--image-size", "129", "--json", str(report)]  # fmt: skip
        _run("cli_job", {"arguments": arguments}, f"evaluating the {bands}-band model")
        import json

        quality[bands] = json.loads(report.read_text())
    return quality


def _predictions(args, work, model):
    memory, speed = {}, {}
    for size in args.sizes:
        image, labels = work / f"mosaic_{size}.tif", work / f"mosaic_{size}_labels.tif"
        if not image.exists():
            job = {"size": size, "bands": 4, "seed": 7, "image": str(image), "labels": str(labels)}
            _run("mosaic_job", job, f"writing a {size}² 4-band mosaic")
        out = work / f"classes_{size}.tif"
        arguments = ["predict", "--model", str(model), "--input", str(image), "--out", str(out),
                     "--tile", str(args.tile), "--overlap", str(args.overlap)]  # fmt: skip
        memory[size] = _run("cli_job", {"arguments": arguments}, f"predicting {size}²")
    smallest = min(args.sizes)
    image = work / f"mosaic_{smallest}.tif"
    artifacts = {"keras": model}
    for name, quantization in (("tflite_fp32", "none"), ("tflite_int8", "int8")):
        artifacts[name] = work / f"model_{name}.tflite"
        if not artifacts[name].exists():
            arguments = ["export", "--model", str(model), "--format", "tflite", "--quantization",
                         quantization, "--calibration-data", str(work / "scenes_4band"),
                         "--input-size", str(args.tile), "--calibration-steps", "16",
                         "--out", str(artifacts[name])]  # fmt: skip
            _run("cli_job", {"arguments": arguments}, f"exporting {name}")
    for name, artifact in artifacts.items():
        job = {"artifact": str(artifact), "image": str(image), "tile": args.tile,
               "overlap": args.overlap, "out": str(work / f"speed_{name}.tif")}  # fmt: skip
        speed[name] = _run("speed_job", job, f"{name} windows on {smallest}²")
    return memory, speed


def picture(work, size, path):
    """A crop of the smallest mosaic: R, G, B; near-infrared; predicted classes; the truth."""
    import rasterio
    from rasterio.windows import Window

    from tfdeeplab.plots import prediction_grid
    from tfdeeplab.visualize import palette

    window = Window(0, 0, 512, 512)
    with rasterio.open(work / f"mosaic_{size}.tif") as image:
        pixels = np.moveaxis(image.read(window=window), 0, -1) / 257
    with rasterio.open(work / f"mosaic_{size}_labels.tif") as labels:
        truth = labels.read(1, window=window)
    with rasterio.open(work / f"classes_{size}.tif") as classes:
        predicted = classes.read(1, window=window)
    rgb = np.clip(pixels[..., :3], 0, 255).astype(np.uint8)
    nir = np.repeat(np.clip(pixels[..., 3:4], 0, 255).astype(np.uint8), 3, axis=-1)
    colours = palette(5)
    names = ["background", "disc", "box", "line", "vegetation"]
    rows = [(rgb, nir, colours[predicted], colours[truth])]
    titles = ("R, G, B", "near-infrared", "tiled prediction", "truth")
    return prediction_grid(path, rows, titles, names, colours)


def _quality_rows(quality, settings):
    lines = [
        f"## What the near-infrared band buys ({settings['num_images']} scenes of {SCENE}², "
        f"{settings['minutes']} min of training each, `final.keras` on the validation split)",
        "",
        "| bands | mIoU | mean boundary F1 | vegetation IoU | pixel accuracy |",
        "|---|---|---|---|---|",
    ]
    for bands, evaluation in quality.items():
        vegetation = next(c for c in evaluation["classes"] if c["name"] == "vegetation")
        lines.append(
            f"| {bands} | {percent(evaluation['mean_iou'])} "
            f"| {percent(evaluation['mean_boundary_f1'])} | {percent(vegetation['iou'])} "
            f"| {percent(evaluation['pixel_accuracy'])} |"
        )
    return [*lines, "", f"Training: `tfdeeplab train {shlex.join(RECIPE)} "
            f"--time-budget-minutes {settings['minutes']}`."]  # fmt: skip


def markdown(report):
    memory, speed = report["memory"], report["speed"]
    seams, settings = report["seams"], report["settings"]
    lines = [
        "# Multispectral rasters: the fourth band, and tiled prediction of whole GeoTIFFs",
        "",
        f"{generated_by(report)}, {report['machine']['cores']} cores, in "
        f"{report['wall_s'] / 60:.0f} min.",
        "",
        *_quality_rows(report["quality"], settings),
    ]
    lines += [
        "",
        f"## Peak memory of `tfdeeplab predict --tile {settings['tile']} --overlap "
        f"{settings['overlap']}` (4-band 16-bit GeoTIFF in, class GeoTIFF out, fresh process)",
        "",
        "| raster | pixels | peak RSS MB | seconds |",
        "|---|---|---|---|",
    ]
    for size, row in memory.items():
        lines.append(
            f"| {size}² | {int(size) ** 2 / 1e6:.1f} M | {row['peak_rss_mb']:.0f} "
            f"| {row['seconds']:.0f} |"
        )
    lines += ["", "## Windows per second (the smallest raster; `predict_tiled` alone: model "
              "loaded and warmed up, GeoTIFF read and written)", "",
              "| model | windows | seconds | windows/s |", "|---|---|---|---|"]  # fmt: skip
    for name, row in speed.items():
        lines.append(
            f"| {name} | {row['windows']} | {row['seconds']:.1f} "
            f"| {row['windows'] / row['seconds']:.2f} |"
        )
    lines += ["", f"## Seams ({settings['seam_size']}² mosaic in memory, Keras, window "
              f"{settings['tile']})", "",
              "| overlap | max abs prob. difference on window edges | anywhere "
              "| mean on window edges | mean elsewhere | argmax agreement |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in seams.items():
        lines.append(
            f"| {name.split('_')[1]} | {row['edges']:.4f} | {row['all']:.4f} "
            f"| {row['edges_mean']:.5f} | {row['elsewhere_mean']:.5f} "
            f"| {percent(row['argmax_agreement'])} |"
        )
    lines += ["", "Tiled and whole-image predictions can never be equal everywhere: ASPP's "
              "image-level pooling makes every pixel depend on the whole window. A seam is "
              "an error that concentrates on the lines where windows meet."]  # fmt: skip
    lines += ["", "![a crop of the smallest mosaic](RASTERS.png)", ""]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sizes", nargs="*", type=int, default=[2000, 8000], help="mosaic sides (pixels)")
    add("--tile", type=int, default=512)
    add("--overlap", type=int, default=64)
    add("--num-images", type=int, default=240, help="training scenes")
    add("--minutes", type=float, default=4.0, help="training budget per band count")
    add("--seam-size", type=int, default=1024, help="in-memory mosaic of the seam check")
    add("--work", default="runs/rasters")
    add("--out", default="benchmarks/RASTERS.md", help="Markdown; JSON and PNG beside it")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    quality = _quality(args, work)
    model = work / "train_4band" / "final.keras"
    memory, speed = _predictions(args, work, model)
    job = {"model": str(model), "size": args.seam_size, "tile": args.tile,
           "overlap": args.overlap}  # fmt: skip
    seams = _run("seam_job", job, "seams")
    report = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "command": "python -m benchmarks.rasters " + shlex.join(argv or sys.argv[1:]),
        "quality": {str(k): v for k, v in quality.items()},
        "memory": {str(k): v for k, v in memory.items()},
        "speed": speed,
        "seams": seams,
        "wall_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture(work, min(args.sizes), out.with_suffix(".png"))
    write_report(out, markdown(report), report)
    return report


if __name__ == "__main__":
    main()
