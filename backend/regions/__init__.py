"""Masks -> Label Studio regions: brush (RLE) and polygon results, in the shape `make_region` gives boxes."""
from .brush import brush_region, mask_to_rle, rle_to_mask
from .polygon import PolygonConfig, mask_to_polygons, polygon_regions
from .result import region_result

__all__ = [
    "PolygonConfig",
    "brush_region",
    "mask_to_polygons",
    "mask_to_rle",
    "polygon_regions",
    "region_result",
    "rle_to_mask",
]
