"""Segmentation data: folder datasets, tf.data pipelines and the synthetic default dataset."""

from tfdeeplab.data.folder import DataError, SegmentationFolder, scan_folder
from tfdeeplab.data.pipeline import (
    Augmentation,
    EvalView,
    evaluation_canvas,
    load_segmentation_folder,
    make_dataset,
    scan_split,
)
from tfdeeplab.data.synthetic import multispectral_scenes, synthetic_scenes

__all__ = [
    "Augmentation",
    "DataError",
    "EvalView",
    "SegmentationFolder",
    "evaluation_canvas",
    "load_segmentation_folder",
    "make_dataset",
    "multispectral_scenes",
    "scan_folder",
    "scan_split",
    "synthetic_scenes",
]
