"""Every speed lever keeps the outputs of the plain forward (not timed; see benchmarks/throughput.py).

Levers: the text-feature cache (BERT once per prompt), the embedding_bag deformable attention and the
in-place FFN ReLU (backend/detection/deformable.py), the reassociated fusion attention (fusion.py). THP allocation (THP_MEM_ALLOC_ENABLE, set before torch is imported)
only changes where tensors live in memory, so it cannot change a number; the benchmark checks it end to end.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.detection import Detector, DetectorConfig
from backend.detection import fusion
from backend.detection.deformable import (
    FastMSDA,
    install,
    ms_deform_attn_embedding_bag,
    ms_deform_attn_reference,
    uninstall,
)

# fp32, different summation order only: observed differences are ~1e-6.
TOL = 1e-4


def random_case(seed, batch, heads, dim, shapes, queries, points, spread=1.6):
    g = torch.Generator().manual_seed(seed)
    levels = len(shapes)
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, dim, generator=g)
    # [0, 1] is the map; spread > 1 puts many samples (and corners) outside it, some far outside.
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=g) * spread - (spread - 1) / 2
    weights = torch.rand(batch, queries, heads, levels * points, generator=g).softmax(-1)
    return value, locations, weights.view(batch, queries, heads, levels, points)


@pytest.mark.parametrize(
    "batch,heads,dim,shapes,queries,points,spread",
    [
        (1, 1, 4, [(5, 7)], 9, 1, 1.0),
        (2, 3, 8, [(7, 9), (4, 5), (2, 3), (1, 1)], 11, 4, 1.6),
        (2, 8, 32, [(20, 27), (10, 14), (5, 7), (3, 4)], 50, 4, 3.0),  # grounding-dino-tiny's heads/dims
        (3, 2, 16, [(1, 1), (6, 2)], 7, 2, 10.0),  # mostly far outside, degenerate level sizes
    ],
)
def test_embedding_bag_kernel_matches_grid_sample(batch, heads, dim, shapes, queries, points, spread):
    value, locations, weights = random_case(0, batch, heads, dim, shapes, queries, points, spread)
    expected = ms_deform_attn_reference(value, shapes, locations, weights)
    got = ms_deform_attn_embedding_bag(value, shapes, locations, weights)
    assert got.shape == expected.shape == (batch, queries, heads * dim)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_kernel_exact_corner_cases():
    shapes = [(3, 4), (2, 2)]
    value, _, weights = random_case(1, 1, 2, 4, shapes, 6, 1)
    # Pixel centres, borders, half a pixel outside, exactly on the edge of the map, far outside.
    xs = torch.tensor([0.125, 0.0, 1.0, -0.125, 1.125, 0.5])
    locations = torch.stack([xs, xs.flip(0)], -1).view(1, 6, 1, 1, 1, 2).expand(1, 6, 2, 2, 1, 2).contiguous()
    expected = ms_deform_attn_reference(value, shapes, locations, weights)
    got = ms_deform_attn_embedding_bag(value, shapes, locations, weights)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_kernel_reduced_precision_value_matches_fp32_reference():
    shapes = [(7, 9), (4, 5)]
    value, locations, weights = random_case(2, 2, 2, 8, shapes, 10, 4)
    value = value.bfloat16()
    expected = ms_deform_attn_reference(value.float(), shapes, locations, weights)
    got = ms_deform_attn_embedding_bag(value, shapes, locations, weights)
    assert got.dtype == torch.float32  # as grid_sample under autocast
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_install_and_uninstall_swap_every_kernel(tiny_model_dir):
    from transformers import GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(tiny_model_dir).eval()
    expected = model.config.encoder_layers + model.config.decoder_layers
    assert install(model) == expected
    assert sum(isinstance(m, FastMSDA) for m in model.modules()) == expected
    assert install(model) == 0  # idempotent
    assert not any(k.endswith("_original") for k in model.state_dict())
    relus = [m for m in model.modules() if type(m) is torch.nn.ReLU]
    assert relus and all(m.inplace for m in relus)  # the FFN activations, in place
    assert uninstall(model) == expected
    assert not any(isinstance(m, FastMSDA) for m in model.modules())
    assert not any(m.inplace for m in relus)


def _fusion_attention(seed=0):
    from transformers import GroundingDinoConfig
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoBiMultiHeadAttention

    torch.manual_seed(seed)
    return GroundingDinoBiMultiHeadAttention(GroundingDinoConfig()).eval()  # grounding-dino-tiny's sizes


@pytest.mark.parametrize(
    "batch,tokens,text_len,masked,scale",
    [
        (1, 700, 13, False, 1.0),  # a 5-label config, batch 1
        (1, 400, 195, False, 1.0),  # the 80 COCO names
        (3, 300, 9, True, 1.0),  # padded images and padded captions in one batch
        (2, 200, 7, True, 200.0),  # logits spanning more than 50000: transformers' clamps bite
    ],
)
@pytest.mark.parametrize("host_checks", [True, False], ids=["cpu-checks", "accelerator-sequence"])
def test_fused_fusion_attention_matches_transformers(batch, tokens, text_len, masked, scale, host_checks, monkeypatch):
    # On an accelerator the fused forward skips its host-synchronising shortcuts; run that branch here too.
    monkeypatch.setattr(fusion, "_host_checks_are_cheap", lambda device: host_checks)
    attn = _fusion_attention()
    g = torch.Generator().manual_seed(batch * 1000 + text_len)
    vision = torch.randn(batch, tokens, 256, generator=g) * scale
    text = torch.randn(batch, text_len, 256, generator=g) * scale
    vision_mask = torch.zeros(batch, tokens, dtype=torch.bool)
    text_mask = torch.zeros(batch, text_len, dtype=torch.bool)
    if masked:
        vision_mask[1, tokens // 2 :] = True
        text_mask[0, text_len - 3 :] = True
    with torch.inference_mode():
        (ref_v, ref_vw), (ref_t, ref_tw) = attn(vision, text, vision_mask, text_mask)
        assert fusion.install(attn) == 1
        (got_v, got_vw), (got_t, got_tw) = attn(vision, text, vision_mask, text_mask)
        assert fusion.uninstall(attn) == 1
        (again_v, _), _ = attn(vision, text, vision_mask, text_mask)
    assert torch.equal(again_v, ref_v)  # uninstall restores transformers' forward
    if scale > 1:  # the clamp path was really taken: the logits span more than 50000
        with torch.inference_mode():
            queries = (attn.vision_proj(vision) * attn.scale).view(batch, tokens, 4, 256).transpose(1, 2)
            logits = queries @ attn.text_proj(text).view(batch, text_len, 4, 256).permute(0, 2, 3, 1)
        assert float(logits.max() - logits.min()) > 50000
    for ref, got in ((ref_v, got_v), (ref_t, got_t), (ref_vw, got_vw), (ref_tw, got_tw)):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_fused_fusion_attention_under_bf16_autocast():
    attn = _fusion_attention()
    g = torch.Generator().manual_seed(5)
    vision, text = torch.randn(2, 300, 256, generator=g), torch.randn(2, 11, 256, generator=g)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        (ref_v, _), (ref_t, _) = attn(vision, text)
        fusion.install(attn)
        (got_v, _), (got_t, _) = attn(vision, text)
    for ref, got in ((ref_v, got_v), (ref_t, got_t)):
        assert torch.isfinite(got).all()
        # bf16 keeps 8 bits: both orders round differently, so compare at bf16's resolution.
        torch.testing.assert_close(got.float(), ref.float(), rtol=0.05, atol=0.02 * float(ref.float().abs().max()))


def test_fused_fusion_attention_training_mode_is_transformers_own():
    attn = _fusion_attention().train()
    fusion.install(attn)
    vision, text = torch.randn(1, 50, 256), torch.randn(1, 5, 256)
    torch.manual_seed(1)
    (got, _), _ = attn(vision, text)
    fusion.uninstall(attn)
    torch.manual_seed(1)
    (ref, _), _ = attn(vision, text)
    assert torch.equal(got, ref)  # same dropout draws: the same code ran


def test_fusion_install_keeps_weights_and_state_dict(tiny_model_dir):
    from transformers import GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(tiny_model_dir).eval()
    keys = list(model.state_dict())
    assert fusion.install(model) == model.config.encoder_layers
    assert fusion.install(model) == 0  # idempotent
    assert list(model.state_dict()) == keys
    assert fusion.uninstall(model) == model.config.encoder_layers


def _images():
    rng = np.random.RandomState(0)
    sizes = [(640, 480), (480, 640), (500, 375)]
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def plain_and_fast(tiny_model_dir):
    plain = Detector.load(
        DetectorConfig(
            model=str(tiny_model_dir), device="cpu",
            cache_text_features=False, fast_deformable_attention=False, fast_fusion_attention=False,
        )
    )
    fast = Detector.load(DetectorConfig(model=str(tiny_model_dir), device="cpu"))
    assert not any(isinstance(m, FastMSDA) for m in plain.model.modules())
    assert any(isinstance(m, FastMSDA) for m in fast.model.modules())
    assert fusion.uninstall(plain.model) == 0 and fusion.install(fast.model) == 0  # on in fast, off in plain
    return plain, fast


CLASSES = ["person", "bicycle", "car", "traffic light", "dog", "teddy bear"]


def test_all_levers_on_equal_all_off_raw_outputs(plain_and_fast):
    plain, fast = plain_and_fast
    images = _images()
    chunk = plain.prompt(CLASSES).chunks[0]
    for batch in ([images[0]], images):  # batch 1 (evaluation parity) and a padded batch (backend)
        logits_p, boxes_p = plain.forward(batch, chunk)
        fast.forward(batch, chunk)  # fills the text cache: the second call uses it
        logits_f, boxes_f = fast.forward(batch, chunk)
        finite = torch.isfinite(logits_p)
        assert torch.equal(finite, torch.isfinite(logits_f))
        assert (logits_p[finite] - logits_f[finite]).abs().max() <= TOL
        assert (boxes_p - boxes_f).abs().max() <= TOL
    assert fast.text_cache is not None and fast.text_cache.hits > 0


def test_all_levers_on_same_ranking_and_labelling(plain_and_fast):
    plain, fast = plain_and_fast
    images = _images()
    prompt = plain.prompt(CLASSES)
    for image in images:  # evaluation: batch 1
        (rp,), (rf,) = plain.rank([image], prompt, num_select=100), fast.rank([image], prompt, num_select=100)
        assert torch.equal(rp.labels, rf.labels)
        torch.testing.assert_close(rf.scores, rp.scores, rtol=0, atol=TOL)
        torch.testing.assert_close(rf.boxes, rp.boxes, rtol=0, atol=TOL * 1000)  # pixels: 1e-4 of 1000 px
    threshold = 0.3
    for dp, df in zip(plain.detect(images, prompt, threshold), fast.detect(images, prompt, threshold)):
        assert len(dp) == len(df) > 0
        assert torch.equal(dp.labels, df.labels)
        torch.testing.assert_close(df.scores, dp.scores, rtol=0, atol=TOL)
        torch.testing.assert_close(df.boxes, dp.boxes, rtol=0, atol=TOL * 1000)
