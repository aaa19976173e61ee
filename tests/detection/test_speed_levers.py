"""Every speed lever keeps the outputs of the plain forward, on both family architectures (not timed;
see benchmarks/throughput.py).

Levers (detection/levers.py): the text-feature cache, the backbone reuse across prompt chunks
(its own test: test_prompt_chunks.py), the reassociated fusion attention, the embedding_bag deformable
attention and the in-place FFN ReLU. THP allocation (THP_MEM_ALLOC_ENABLE, set at process start) only
changes where tensors live in memory, so it cannot change a number; the benchmark checks it end to end.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detection import ARCHITECTURES, LEVER_NAMES, Architecture, Detector, DetectorConfig
from detection import fusion, inplace_relu
from detection.deformable import FastMSDA, install, ms_deform_attn_embedding_bag, uninstall
from detection.levers import install_levers, uninstall_levers
from detection.patching import modules_of_type

FAMILY = tuple(ARCHITECTURES)

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


def transformers_kernel(model_type, value, shapes, locations, weights):
    """transformers' own MultiScaleDeformableAttention (the architecture's class, not a copy of its code)."""
    kernel = ARCHITECTURES[model_type].transformers_class("MultiScaleDeformableAttention")()
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    return kernel(value, spatial_shapes, shapes, level_start_index, locations, weights, im2col_step=64)


@pytest.mark.parametrize("model_type", FAMILY)
@pytest.mark.parametrize(
    "batch,heads,dim,shapes,queries,points,spread",
    [
        (1, 1, 4, [(5, 7)], 9, 1, 1.0),
        (2, 3, 8, [(7, 9), (4, 5), (2, 3), (1, 1)], 11, 4, 1.6),
        (2, 8, 32, [(20, 27), (10, 14), (5, 7), (3, 4)], 50, 4, 3.0),  # grounding-dino-tiny's heads/dims
        (3, 2, 16, [(1, 1), (6, 2)], 7, 2, 10.0),  # mostly far outside, degenerate level sizes
    ],
)
def test_embedding_bag_kernel_matches_transformers(model_type, batch, heads, dim, shapes, queries, points, spread):
    value, locations, weights = random_case(0, batch, heads, dim, shapes, queries, points, spread)
    expected = transformers_kernel(model_type, value, shapes, locations, weights)
    got = ms_deform_attn_embedding_bag(value, shapes, locations, weights)
    assert got.shape == expected.shape == (batch, queries, heads * dim)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_kernel_exact_corner_cases():
    shapes = [(3, 4), (2, 2)]
    value, _, weights = random_case(1, 1, 2, 4, shapes, 6, 1)
    # Pixel centres, borders, half a pixel outside, exactly on the edge of the map, far outside.
    xs = torch.tensor([0.125, 0.0, 1.0, -0.125, 1.125, 0.5])
    locations = torch.stack([xs, xs.flip(0)], -1).view(1, 6, 1, 1, 1, 2).expand(1, 6, 2, 2, 1, 2).contiguous()
    expected = transformers_kernel("grounding-dino", value, shapes, locations, weights)
    got = ms_deform_attn_embedding_bag(value, shapes, locations, weights)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_kernel_reduced_precision_value_matches_fp32_reference():
    shapes = [(7, 9), (4, 5)]
    value, locations, weights = random_case(2, 2, 2, 8, shapes, 10, 4)
    value = value.bfloat16()
    expected = transformers_kernel("grounding-dino", value.float(), shapes, locations, weights)
    got = ms_deform_attn_embedding_bag(value, shapes, locations, weights)
    assert got.dtype == torch.float32  # as grid_sample under autocast
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def _plain_model(model_dir):
    from transformers import AutoModelForZeroShotObjectDetection

    model = AutoModelForZeroShotObjectDetection.from_pretrained(model_dir).eval()
    return model, ARCHITECTURES[model.config.model_type]


def test_deformable_install_and_uninstall_swap_every_kernel(family_model_dir):
    model, architecture = _plain_model(family_model_dir)
    originals = dict(modules_of_type(model, architecture.transformers_class("MultiScaleDeformableAttention")))
    expected = model.config.encoder_layers + model.config.decoder_layers
    assert len(originals) == expected
    result = install(model, architecture)
    assert set(result.patched) == set(originals) and result.status == "active"
    assert sum(isinstance(m, FastMSDA) for m in model.modules()) == expected
    again = install(model, architecture)  # idempotent
    assert again.patched == () and set(again.already) == set(originals) and again.status == "active"
    assert not any(k.endswith("_original") for k in model.state_dict())
    assert uninstall(model) == expected
    assert all(model.get_submodule(path) is module for path, module in originals.items())  # the same modules back


def test_inplace_relu_lever_patches_every_ffn_and_restores_what_was_there(family_model_dir):
    model, architecture = _plain_model(family_model_dir)
    layers = {
        path: getattr(layer, attribute)
        for suffix, attribute in inplace_relu.FFN_ACTIVATIONS.items()
        for path, layer in modules_of_type(model, architecture.layer_class(suffix))
    }
    # encoder: one deformable + one text-enhancer layer; decoder: two layers
    assert len(layers) == model.config.encoder_layers * 2 + model.config.decoder_layers
    first = next(iter(layers))
    layers[first].inplace = True  # one already in place (a user's choice): left as it is, and kept on uninstall
    result = inplace_relu.install(model, architecture)
    assert len(result.patched) == len(layers) - 1 and len(result.already) == 1
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    assert inplace_relu.install(model, architecture).patched == ()  # idempotent
    assert inplace_relu.uninstall(model) == len(layers) - 1
    for path, original in layers.items():
        parent = model.get_submodule(path)
        attribute = next(a for a in ("activation_fn", "activation") if a in parent._modules)
        assert getattr(parent, attribute) is original  # the very module that was there, not a new one
    assert [m.inplace for m in layers.values()] == [True] + [False] * (len(layers) - 1)


def test_inplace_relu_lever_leaves_other_activations_and_says_so(family_model_dir):
    model, architecture = _plain_model(family_model_dir)
    for suffix, attribute in inplace_relu.FFN_ACTIVATIONS.items():
        for _, layer in modules_of_type(model, architecture.layer_class(suffix)):
            setattr(layer, attribute, nn.GELU())
    result = inplace_relu.install(model, architecture)
    assert result.status == "not installed: the FFN activations are GELU, not a plain ReLU"


def _fusion_attention(model_type, seed=0):
    from transformers import AutoConfig

    torch.manual_seed(seed)
    cls = ARCHITECTURES[model_type].layer_class("BiMultiHeadAttention")
    return cls(AutoConfig.for_model(model_type)).eval()  # the architecture's default (tiny) sizes


@pytest.mark.parametrize("model_type", FAMILY)
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
def test_fused_fusion_attention_matches_transformers(model_type, batch, tokens, text_len, masked, scale, host_checks, monkeypatch):
    # On an accelerator the fused forward skips its host-synchronising shortcuts; run that branch here too.
    monkeypatch.setattr(fusion, "_host_checks_are_cheap", lambda device: host_checks)
    attn = _fusion_attention(model_type)
    architecture = ARCHITECTURES[model_type]
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
        assert fusion.install(attn, architecture).patched == ("",)
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
    attn = _fusion_attention("grounding-dino")
    g = torch.Generator().manual_seed(5)
    vision, text = torch.randn(2, 300, 256, generator=g), torch.randn(2, 11, 256, generator=g)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        (ref_v, _), (ref_t, _) = attn(vision, text)
        fusion.install(attn, ARCHITECTURES["grounding-dino"])
        (got_v, _), (got_t, _) = attn(vision, text)
    for ref, got in ((ref_v, got_v), (ref_t, got_t)):
        assert torch.isfinite(got).all()
        # bf16 keeps 8 bits: both orders round differently, so compare at bf16's resolution.
        torch.testing.assert_close(got.float(), ref.float(), rtol=0.05, atol=0.02 * float(ref.float().abs().max()))


def test_fused_fusion_attention_training_mode_is_transformers_own():
    attn = _fusion_attention("grounding-dino").train()
    fusion.install(attn, ARCHITECTURES["grounding-dino"])
    vision, text = torch.randn(1, 50, 256), torch.randn(1, 5, 256)
    torch.manual_seed(1)
    (got, _), _ = attn(vision, text)
    fusion.uninstall(attn)
    torch.manual_seed(1)
    (ref, _), _ = attn(vision, text)
    assert torch.equal(got, ref)  # same dropout draws: the same code ran


def test_fusion_install_keeps_weights_and_state_dict(family_model_dir):
    model, architecture = _plain_model(family_model_dir)
    keys = list(model.state_dict())
    assert len(fusion.install(model, architecture).patched) == model.config.encoder_layers
    assert fusion.install(model, architecture).patched == ()  # idempotent
    assert list(model.state_dict()) == keys
    assert fusion.uninstall(model) == model.config.encoder_layers


def test_every_lever_installs_on_both_architectures_and_uninstalls(family_model_dir):
    model, architecture = _plain_model(family_model_dir)
    modules = dict(model.named_modules())
    report = install_levers(model, architecture, torch.device("cpu"), {})
    assert report == {name: "active" for name in LEVER_NAMES}
    restored = uninstall_levers(model)
    assert all(count > 0 for count in restored.values()), restored
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(model.get_submodule(path) is module for path, module in modules.items())


def test_a_lever_that_finds_nothing_is_a_warning_and_in_the_report(tiny_model_dir, monkeypatch, caplog):
    """A transformers release that renames the layers: the levers that look for them say why, outputs unchanged."""
    from detection import detector as detector_module

    real = ARCHITECTURES["grounding-dino"]
    renamed = Architecture(real.model_type, real.modeling_module, "RenamedGroundingDino", real.model_class)
    monkeypatch.setattr(detector_module, "architecture_of", lambda model: renamed)
    with caplog.at_level(logging.WARNING, logger="detection.levers"):
        detector = Detector.load(DetectorConfig(model=str(tiny_model_dir), device="cpu"))
    report = detector.lever_report
    for name in ("fusion", "inplace_relu"):
        assert report[name].startswith("not installed: transformers ") and "has no class RenamedGroundingDino" in report[name]
        assert any(f"speed lever '{name}' not installed" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert report["text_cache"] == report["deformable"] == report["backbone_reuse"] == "active"
    assert [w.split(" not installed")[0] for w in detector.warnings] == ["speed lever 'fusion'", "speed lever 'inplace_relu'"]
    json_form = __import__("json").dumps(report)  # what /status and metrics.json carry
    assert "RenamedGroundingDinoBiMultiHeadAttention" in json_form


def test_switched_off_levers_are_reported_off(tiny_model_dir):
    detector = Detector.load(DetectorConfig(model=str(tiny_model_dir), device="cpu").with_levers(["fusion"]))
    assert {k: v for k, v in detector.lever_report.items() if k != "thp_allocation"} == {
        "text_cache": "off", "backbone_reuse": "off", "fusion": "active", "deformable": "off", "inplace_relu": "off",
    }
    assert detector.text_cache is None and detector.backbone_reuse is None
    assert detector.warnings == []  # switched off is not a warning
    with pytest.raises(ValueError, match="unknown speed lever"):
        DetectorConfig().with_levers(["warp_drive"])


def _images():
    rng = np.random.RandomState(0)
    sizes = [(640, 480), (480, 640), (500, 375)]
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def plain_detector(small_family_model_dir):
    return Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu").with_levers(()))


CLASSES = ["person", "bicycle", "car", "traffic light", "dog", "teddy bear"]


@pytest.fixture(scope="module")
def plain_outputs(plain_detector):
    """The unpatched model's raw outputs: batch 1 (evaluation parity) and a padded batch (backend)."""
    images = _images()
    chunk = plain_detector.prompt(CLASSES).chunks[0]
    return [(batch, plain_detector.forward(batch, chunk)) for batch in ([images[0]], images)]


def _assert_same_raw_outputs(plain_outputs, fast):
    chunk = fast.prompt(CLASSES).chunks[0]
    for batch, (logits_p, boxes_p) in plain_outputs:
        logits_f, boxes_f = fast.forward(batch, chunk)
        if fast.text_cache is not None:  # the first call filled the text cache: the second one uses it
            logits_f, boxes_f = fast.forward(batch, chunk)
        finite = torch.isfinite(logits_p)
        assert torch.equal(finite, torch.isfinite(logits_f))
        assert (logits_p[finite] - logits_f[finite]).abs().max() <= TOL
        assert (boxes_p - boxes_f).abs().max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("lever", [name for name in LEVER_NAMES if name != "backbone_reuse"])
def test_each_lever_alone_equals_the_unpatched_model(small_family_model_dir, plain_detector, plain_outputs, lever):
    fast = Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu").with_levers([lever]))
    assert fast.lever_report[lever] == "active"
    assert plain_detector.lever_report[lever] == "off"
    _assert_same_raw_outputs(plain_outputs, fast)


@pytest.fixture(scope="module")
def fast_detector(small_family_model_dir):
    return Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu"))


def test_all_levers_on_equal_all_off_raw_outputs(plain_outputs, fast_detector):
    assert all(v == "active" for k, v in fast_detector.lever_report.items() if k != "thp_allocation")
    _assert_same_raw_outputs(plain_outputs, fast_detector)
    assert fast_detector.text_cache is not None and fast_detector.text_cache.hits > 0


def test_all_levers_on_same_ranking_and_labelling(plain_detector, fast_detector):
    plain, fast = plain_detector, fast_detector
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
