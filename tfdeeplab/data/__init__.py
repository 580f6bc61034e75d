"""Segmentation data: folder datasets, tf.data pipelines and the synthetic default dataset."""

from tfdeeplab.data.folder import DataError, SegmentationFolder, scan_folder
from tfdeeplab.data.pipeline import (
    Augmentation,
    load_segmentation_folder,
    make_dataset,
    scan_split,
)
from tfdeeplab.data.synthetic import synthetic_scenes

__all__ = [
    "Augmentation",
    "DataError",
    "SegmentationFolder",
    "load_segmentation_folder",
    "make_dataset",
    "scan_folder",
    "scan_split",
    "synthetic_scenes",
]
