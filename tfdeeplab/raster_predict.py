"""`tfdeeplab.predict_tiled` and `tfdeeplab predict --tile`: sliding-window inference of a
Keras model or an exported artifact on an image or a raster of any size (`tfdeeplab.tiling`),
GeoTIFF in and out through rasterio (`tfdeeplab.geo`).

Part of the application layer: it loads exported artifacts with `converters.predictors`.
"""

from pathlib import Path

import numpy as np

from tfdeeplab.tiling import ArrayOutput, ArraySource, predict_windows

DEFAULT_TILE = 512


def _runner(model_or_artifact, scales=(1.0,), flip=False):
    """(logits_fn, num_classes, the artifact's own tile size or None, metadata or None)."""
    import keras

    from converters.predictors import KerasPredictor, load_predictor

    if isinstance(model_or_artifact, keras.Model):
        predictor = KerasPredictor(model_or_artifact, scales, flip)
        return predictor.logits, predictor.num_classes, None, None
    predictor = load_predictor(model_or_artifact, scales, flip)
    return predictor.logits, predictor.num_classes, predictor.tile_size, predictor.metadata


def _tile_size(requested, own):
    if own is None:
        return DEFAULT_TILE if requested is None else int(requested)
    if requested is not None and int(requested) != own:
        raise ValueError(
            f"tile_size={requested}: the .tflite file has a fixed {own}×{own} input; use "
            f"--tile {own} or export with --input-size dynamic"
        )
    return own


def _classes_and_colours(num_classes, metadata, class_names, colours):
    from tfdeeplab.visualize import palette

    if class_names is None and metadata is not None:
        class_names = [c["name"] for c in metadata["classes"]]
    if colours is None and metadata is not None:
        colours = [c["colour"] for c in metadata["classes"]]
    names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    colours = np.asarray(palette(num_classes) if colours is None else colours, np.uint8)
    return names, colours


def predict_tiled(
    model_or_artifact,
    image_or_path,
    tile_size=None,
    overlap=64,
    batch_size=4,
    out=None,
    probabilities=False,
    nodata=None,
    scales=(1.0,),
    flip=False,
    class_names=None,
    colours=None,
    progress=True,
    require_georeference=False,
):
    """Segments an image or raster of any size window by window (see `tfdeeplab.tiling`).

    Args:
        model_or_artifact: a Keras segmentation model, or the path of a `.keras` file, a
            SavedModel folder or a `.tflite` file (a fixed-size file sets the tile size).
        image_or_path: an array (H, W, bands) in the model's input units, or the path of a
            (Geo)TIFF (read window by window, never whole).
        tile_size: window side in pixels; None: the artifact's own size, else 512.
        overlap: pixels shared by neighbouring windows, blended with a raised-cosine window.
        batch_size: windows per model call (a TFLite file runs them one by one).
        out: with a raster path, the GeoTIFF to write (class ids, input's CRS, transform and
            nodata → 255, colour table); None returns the arrays instead.
        probabilities: also the per-class probabilities (an array, or the GeoTIFF
            `<out stem>_probabilities.tif`).
        nodata: for an array input, the value that marks pixels with no data in every band
            (rasters use their own nodata value or mask).
        scales, flip: multi-scale / mirrored inference of a Keras model, per window.
        class_names, colours: for the output's tags and colour table; default: the artifact's
            metadata, else class_<i> and the palette.
        progress: a progress bar over windows.
        require_georeference: a raster without a coordinate reference system is a ValueError
            naming it (for outputs that must land on a map).

    Returns:
        {"classes": (H, W) uint8 or None when written to `out`, "probabilities": (H, W, K)
        float32 or None, "out": the written path or None, "tiles", "skipped", "batches",
        "tile_size", "overlap"}.
    """
    runner = _runner(model_or_artifact, scales, flip)
    return _tiled(
        runner, image_or_path, tile_size, overlap, batch_size, out, probabilities, nodata,
        class_names, colours, progress, require_georeference,
    )  # fmt: skip


def _tiled(runner, image_or_path, tile_size, overlap, batch_size, out, probabilities, nodata,
           class_names, colours, progress, require_georeference=False):  # fmt: skip
    logits_fn, num_classes, own, metadata = runner
    size = _tile_size(tile_size, own)
    names, colours = _classes_and_colours(num_classes, metadata, class_names, colours)
    settings = {"tile_size": size, "overlap": overlap, "batch_size": batch_size}
    if isinstance(image_or_path, str | Path):
        return _predict_file(
            logits_fn, Path(image_or_path), out, num_classes, names, colours, probabilities,
            settings, progress, require_georeference,
        )  # fmt: skip
    if out is not None:
        raise ValueError("out= writes GeoTIFFs and needs a raster path as image_or_path")
    source = ArraySource(image_or_path, nodata)
    output = ArrayOutput(source.height, source.width, num_classes, probabilities)
    counts = predict_windows(
        logits_fn, source, output, num_classes, probabilities=probabilities,
        progress=progress, **settings,
    )  # fmt: skip
    return _result(output, None, counts, settings)


def _result(output, out, counts, settings):
    """predict_tiled's answer: the arrays of an `ArrayOutput`, or the path written."""
    arrays = out is None
    return {
        "classes": output.classes if arrays else None,
        "probabilities": output.probabilities if arrays else None,
        "out": None if arrays else str(out),
        **counts,
        "tile_size": settings["tile_size"],
        "overlap": settings["overlap"],
    }


def _predict_file(logits_fn, path, out, num_classes, names, colours, probabilities, settings,
                  progress, require_georeference):  # fmt: skip
    from tfdeeplab.geo import GeoTiffOutput, GeoTiffSource, bounded_cache

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such raster file")
    with bounded_cache(), GeoTiffSource(path, require_georeference) as source:
        if out is None:
            output = ArrayOutput(source.height, source.width, num_classes, probabilities)
        else:
            output = GeoTiffOutput(out, source, names, colours, probabilities)
        try:
            counts = predict_windows(
                logits_fn, source, output, num_classes, probabilities=probabilities,
                progress=progress, **settings,
            )  # fmt: skip
        except BaseException:
            if out is not None:
                output.close(success=False)
            raise
        if out is not None:
            output.close()
    return _result(output, out, counts, settings)


def predict_command_tiled(args):
    """`tfdeeplab predict` with `--tile` or a `.tif` `--out`: a GeoTIFF class raster from one
    raster, or palette PNGs (and overlays for RGB images) for each image, window by window."""
    from tfdeeplab.data.folder import read_classes

    names, colours = read_classes(Path(args.data)) if args.data else (None, None)
    settings = {
        "tile_size": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "scales": args.scales,
        "flip": args.flip,
        "class_names": names,
        "colours": colours,
    }
    if args.out.lower().endswith((".tif", ".tiff")):
        source = Path(args.input)
        if not source.is_file():
            raise FileNotFoundError(f"--input {source}: a .tif --out needs one raster file")
        result = predict_tiled(
            args.model, source, out=args.out, probabilities=args.probabilities,
            require_georeference=args.require_georeference, **settings,
        )  # fmt: skip
        print(
            f"Wrote {result['out']} ({result['tiles']} windows of {result['tile_size']}², "
            f"overlap {result['overlap']}, {result['skipped']} all-nodata windows skipped)"
        )
        return 0
    if args.probabilities:
        raise ValueError("--probabilities writes a GeoTIFF: give a .tif --out")
    return _predict_pngs(args, settings)


def _predict_pngs(args, settings):
    from converters.predictors import read_image
    from tfdeeplab.data.folder import image_paths
    from tfdeeplab.visualize import write_prediction_pngs

    out = Path(args.out)
    paths = image_paths(args.input)
    runner = _runner(args.model, settings.pop("scales"), settings.pop("flip"))
    _, colours = _classes_and_colours(runner[1], runner[3], None, settings["colours"])
    for path in paths:
        image = read_image(path)
        result = _tiled(
            runner, image, settings["tile_size"], settings["overlap"], settings["batch_size"],
            None, False, None, None, colours, progress=True,
        )  # fmt: skip
        write_prediction_pngs(out, path.stem, image, result["classes"], colours)
    print(f"Wrote palette masks (and overlays of RGB images) of {len(paths)} images to {out}")
    return 0
