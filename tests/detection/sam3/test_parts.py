"""SAM 3's preprocessing, roi_align and post-processing against independent references (no torchvision).

The comparison with torchvision and transformers' own processor runs in test_reference.py (opt-in).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from detection.sam3 import Sam3Preprocessing, instance_results, roi_align
from detection.sam3 import preprocess as preprocess_module
from detection.sam3.postprocess import masks_to_image


def odd_images():
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(37, 53), (101, 67), (1, 90), (56, 56)]]


@pytest.mark.parametrize("native", [True, False])
def test_pixels_equal_torchvisions_tensor_resize_then_the_fused_normalisation(native, monkeypatch):
    """Reference per image, written from torchvision's resize_image and transformers' fused rescale+normalise:
    uint8 interpolate (native kernel) or float interpolate + round; then (x - 255 * mean) / (255 * std)."""
    monkeypatch.setattr(preprocess_module, "native_uint8_resize", lambda: native)
    pre = Sam3Preprocessing(size=56, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    batch = pre(odd_images())
    assert batch.pixel_values.shape == (4, 3, 56, 56) and batch.pixel_values.dtype == torch.float32
    assert batch.sizes == [(53, 37), (67, 101), (90, 1), (56, 56)]
    for image, got in zip(odd_images(), batch.pixel_values):
        u8 = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
        if image.size == (56, 56):
            resized = u8  # torchvision leaves an image of the target size untouched
        elif native:
            resized = F.interpolate(u8, size=[56, 56], mode="bilinear", align_corners=False, antialias=True)
        else:
            resized = F.interpolate(u8.float(), size=[56, 56], mode="bilinear", align_corners=False, antialias=True).round().to(torch.uint8)
        mean = torch.tensor([0.485, 0.456, 0.406]) * 255.0
        std = torch.tensor([0.229, 0.224, 0.225]) * 255.0
        expected = (resized[0].float() - mean[:, None, None]) / std[:, None, None]
        assert torch.equal(got, expected)


def test_the_two_resize_paths_differ_by_at_most_one_grey_level():
    """Why the path matters: torch's uint8 kernel rounds in fixed point, the float path rounds once."""
    u8 = torch.from_numpy(np.asarray(odd_images()[1]).copy()).permute(2, 0, 1)[None]
    native = F.interpolate(u8, size=[56, 56], mode="bilinear", align_corners=False, antialias=True)
    float_path = F.interpolate(u8.float(), size=[56, 56], mode="bilinear", align_corners=False, antialias=True).round()
    assert (native.float() - float_path).abs().max() <= 1


def reference_roi_align(x, rois, pooled, scale, sampling_ratio, aligned):
    """torchvision's CPU kernel in plain Python floats, sample by sample (float64: a different rounding)."""
    channels, height, width = x.shape[1:]
    out = torch.zeros((len(rois), channels, pooled, pooled), dtype=torch.float64)
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        off = 0.5 if aligned else 0.0
        sw, sh = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sw, y2 * scale - off - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / pooled, rw / pooled
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / pooled)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pooled)
        count = max(gh * gw, 1)
        for ph in range(pooled):
            for pw in range(pooled):
                acc = torch.zeros(channels, dtype=torch.float64)
                for iy in range(gh):
                    y = sh + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = sw + pw * bw + (ix + 0.5) * bw / gw
                        if y < -1.0 or y > height or xx < -1.0 or xx > width:
                            continue
                        yy, xc = max(y, 0.0), max(xx, 0.0)
                        yl, xl = int(yy), int(xc)
                        yh, xh = (yl + 1, xl + 1)
                        if yl >= height - 1:
                            yl = yh = height - 1
                            yy = float(yl)
                        if xl >= width - 1:
                            xl = xh = width - 1
                            xc = float(xl)
                        ly, lx = yy - yl, xc - xl
                        f = x[int(b)].double()
                        acc += (1 - ly) * (1 - lx) * f[:, yl, xl] + (1 - ly) * lx * f[:, yl, xh] + ly * (1 - lx) * f[:, yh, xl] + ly * lx * f[:, yh, xh]
                out[k, :, ph, pw] = acc / count
    return out


@pytest.mark.parametrize("aligned, sampling_ratio, scale", [(False, -1, 1.0), (True, -1, 0.5), (False, 2, 1.0)])
def test_roi_align_equals_the_kernel_rules(aligned, sampling_ratio, scale):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 13)
    # Boxes inside, across the border, outside by more than a pixel, degenerate (zero width).
    boxes = [torch.tensor([[1.0, 2.0, 11.5, 8.0], [-3.0, -1.5, 4.0, 3.0]]),
             torch.tensor([[12.0, 7.5, 20.0, 12.0], [5.0, 5.0, 5.0, 6.0], [-9.0, -9.0, -2.5, -2.0]])]
    got = roi_align(x, boxes, 7, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
    rois = [(i, *map(float, b)) for i, bs in enumerate(boxes) for b in bs]
    expected = reference_roi_align(x, rois, 7, scale, sampling_ratio, aligned)
    assert got.shape == (5, 3, 7, 7) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)  # float32 vs float64 coordinates
    assert got[4].abs().sum() == 0  # wholly more than a pixel outside: zeros


def test_post_processing_re_derived_from_transformers_formula():
    torch.manual_seed(1)
    logits, presence = torch.tensor([[-3, -1, 0, 1, 2, 4], [-2, -0.5, 0.5, 1, 3, 5]]), torch.tensor([[0.4], [-0.3]])
    corners = torch.rand(2, 6, 2, 2).sort(dim=-2).values  # x0 <= x1, y0 <= y1
    boxes = torch.stack([corners[..., 0, 0], corners[..., 0, 1], corners[..., 1, 0], corners[..., 1, 1]], dim=-1)
    masks = torch.randn(2, 6, 8, 8) * 4
    sizes = [(30, 20), (7, 11)]
    got = instance_results(logits, boxes, presence, masks, sizes, threshold=0.3, label=2)
    for i, (w, h) in enumerate(sizes):
        score = 1 / (1 + torch.exp(-logits[i])) * (1 / (1 + torch.exp(-presence[i, 0])))
        keep = score > 0.3
        assert 0 < int(keep.sum()) < 6
        torch.testing.assert_close(got[i].scores, score[keep], rtol=0, atol=1e-7)
        torch.testing.assert_close(got[i].boxes, boxes[i][keep] * torch.tensor([w, h, w, h]), rtol=0, atol=0)
        assert torch.equal(got[i].labels, torch.full((int(keep.sum()),), 2))
        probs = F.interpolate(torch.sigmoid(masks[i][keep])[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        assert torch.equal(got[i].masks, probs > 0.5)


def test_the_two_mask_rules_differ_only_near_the_boundary():
    torch.manual_seed(2)
    logits = torch.randn(3, 8, 8) * 3
    a, b = masks_to_image(logits, (31, 17), "transformers"), masks_to_image(logits, (31, 17), "sam3-eval")
    resized = F.interpolate(logits[:, None], size=(17, 31), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(b, resized > 0)
    assert (a != b).float().mean() < 0.05
    with pytest.raises(ValueError, match="unknown mask rule 'x'"):
        masks_to_image(logits, (31, 17), "x")
