"""Reading MVTec-AD-style folders, the toy dataset, and in-memory image sets."""

from inspect_train.data.mvtec import CategoryIndex, DefectImage, scan_category
from inspect_train.data.images import ImageSet, load_image_set, parse_resolution

__all__ = ["CategoryIndex", "DefectImage", "scan_category", "ImageSet", "load_image_set", "parse_resolution"]
