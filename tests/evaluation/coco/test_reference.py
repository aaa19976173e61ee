"""Detections of `python -m evaluation.coco` equal the official algorithm, written here independently
from the official protocol (IDEA-Research/GroundingDINO `demo/test_ap_on_coco.py`) and applied to the raw `outputs.logits` / `outputs.pred_boxes`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.evaluation.coco.command_line import cli_args, load_json
from tests.evaluation.coco.drawn_dataset import CATEGORIES
from evaluation.coco.cli import main

NUM_SELECT = 300


def protocol_caption(names):
    """vl_utils.build_captions_and_token_span: lowercase, word by word, one span per word, ' .' after."""
    caption, spans = "", []
    for name in names:
        word_spans = []
        for word in (w.strip() for w in name.lower().strip().split(" ")):
            if not word:
                continue
            if caption:
                caption += " "
            word_spans.append((len(caption), len(caption) + len(word)))
            caption += word
        caption += " ."
        spans.append(word_spans)
    return caption, spans


def protocol_positive_map(encoding, spans, max_text_len=256):
    def first(positions):
        for p in positions:
            t = encoding.char_to_token(p)
            if t is not None:
                return t
        return None

    pmap = torch.zeros(len(spans), max_text_len)
    for j, word_spans in enumerate(spans):
        for b, e in word_spans:
            t0, t1 = first((b, b + 1, b + 2)), first((e - 1, e - 2, e - 3))
            if t0 is None or t1 is None:
                continue
            pmap[j, t0 : t1 + 1] = 1
    return pmap / (pmap.sum(-1, keepdim=True) + 1e-6)


def protocol_detections(logits, pred_boxes, pmap, size, image_id, category_ids):
    """Section 4: sigmoid, mean token probability per class, top-300 over queries x classes."""
    prob = logits.sigmoid()  # (Q, 256)
    scores = prob @ pmap.T  # (Q, C)
    num_classes = scores.shape[1]
    values, index = scores.flatten().topk(NUM_SELECT)
    out = []
    width, height = size
    for v, i in zip(values.tolist(), index.tolist()):
        q, c = divmod(i, num_classes)
        cx, cy, w, h = pred_boxes[q].tolist()
        x0, y0, x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        out.append({"image_id": image_id, "category_id": category_ids[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": v, "query": q})
    return out


def assert_same(ours, ref, score_tol, box_tol):
    assert len(ours) == len(ref) == NUM_SELECT
    assert [d["category_id"] for d in ours] == [d["category_id"] for d in ref]
    np.testing.assert_allclose([d["score"] for d in ours], [d["score"] for d in ref], rtol=0, atol=score_tol)
    np.testing.assert_allclose([d["bbox"] for d in ours], [d["bbox"] for d in ref], rtol=0, atol=box_tol)


def test_caption_and_positive_map_follow_the_protocol(fast_detector):
    names = [c["name"] for c in CATEGORIES]
    caption, spans = protocol_caption(names)
    assert caption == "cat . dog . traffic light . hair drier ."
    chunk = fast_detector.prompt(names).chunks[0]
    assert chunk.caption.text == caption
    encoding = fast_detector.tokenizer(caption, return_tensors="pt")
    assert torch.equal(chunk.input_ids, encoding["input_ids"])
    pmap = protocol_positive_map(encoding, spans)
    assert torch.allclose(chunk.phrase_map, pmap)
    # "hair drier" -> hair, dr, ##ier: every piece of every word is covered.
    assert int((pmap[3] > 0).sum()) == len(fast_detector.tokenizer.tokenize("hair drier"))


def test_postprocessing_equals_protocol_on_the_same_outputs(fast_detector, coco_dataset, fast_model_dir, tmp_path):
    """Same raw outputs -> exactly the same 300 (query, class) pairs, scores and boxes."""
    ann, images = coco_dataset
    assert main(cli_args(ann, images, fast_model_dir, tmp_path / "run")) == 0
    ours = load_json(tmp_path / "run" / "detections.json")
    data = json.loads(ann.read_text())
    names, ids = [c["name"] for c in data["categories"]], [c["id"] for c in data["categories"]]
    caption, spans = protocol_caption(names)
    pmap = protocol_positive_map(fast_detector.tokenizer(caption, return_tensors="pt"), spans)
    chunk = fast_detector.prompt(names).chunks[0]
    assert sorted({d["image_id"] for d in ours}) == sorted(im["id"] for im in data["images"])
    for im in sorted(data["images"], key=lambda im: im["id"]):
        image = Image.open(images / im["file_name"]).convert("RGB")
        logits, boxes = fast_detector.forward([image], chunk)
        ref = protocol_detections(logits[0], boxes[0], pmap, image.size, im["id"], ids)
        mine = [d for d in ours if d["image_id"] == im["id"]]
        assert_same(mine, ref, score_tol=1e-6, box_tol=1e-3)
        assert len({(d["query"], d["category_id"]) for d in ref}) == NUM_SELECT
        # A query may appear with several classes in the top 300 (top-k over pairs, not per query).
        assert len({d["query"] for d in ref}) < NUM_SELECT


@pytest.mark.slow
def test_detections_equal_plain_transformers_model_with_protocol(coco_dataset, fast_model_dir, tmp_path):
    """End to end against the unmodified transformers model (no speed levers, no core code at all)."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    ann, images = coco_dataset
    assert main(cli_args(ann, images, fast_model_dir, tmp_path / "run")) == 0
    ours = load_json(tmp_path / "run" / "detections.json")
    processor = AutoProcessor.from_pretrained(fast_model_dir)
    model = GroundingDinoForObjectDetection.from_pretrained(fast_model_dir).eval()
    data = json.loads(ann.read_text())
    names, ids = [c["name"] for c in data["categories"]], [c["id"] for c in data["categories"]]
    caption, spans = protocol_caption(names)
    text = processor.tokenizer(caption, return_tensors="pt")
    pmap = protocol_positive_map(text, spans)
    for im in sorted(data["images"], key=lambda im: im["id"]):
        image = Image.open(images / im["file_name"]).convert("RGB")
        pixels = processor.image_processor(images=[image], return_tensors="pt")
        with torch.inference_mode():
            outputs = model(pixel_values=pixels["pixel_values"], pixel_mask=pixels["pixel_mask"], **text)
        ref = protocol_detections(outputs.logits[0], outputs.pred_boxes[0], pmap, image.size, im["id"], ids)
        mine = [d for d in ours if d["image_id"] == im["id"]]
        assert_same(mine, ref, score_tol=1e-4, box_tol=1e-2)
