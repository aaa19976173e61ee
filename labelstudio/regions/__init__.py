"""Label Studio regions: the envelope every result shares (`region_result`, `region_id`), boxes as
rectangles (`make_region`), masks as brush (RLE) and polygon results."""
from .box import make_region
from .brush import brush_region, mask_to_rle, rle_to_mask
from .polygon import PolygonConfig, mask_to_polygons, polygon_regions
from .result import region_id, region_result

__all__ = [
    "PolygonConfig",
    "brush_region",
    "make_region",
    "mask_to_polygons",
    "mask_to_rle",
    "polygon_regions",
    "region_id",
    "region_result",
    "rle_to_mask",
]
