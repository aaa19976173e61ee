"""Ranking and labelling modes against references written here from the protocol text."""
import pytest
import torch


from detection import Detections, box_iou, class_nms, merge_labelled
from tests.model_factory import make_tokenizer
from evaluation.coco.names import COCO_NAMES
from tests.detection.scenes import scene


def reference_positive_map(tokenizer, names):
    """The official create_positive_map_from_span, written out again independently."""
    caption, spans = "", []
    for name in names:
        word_spans = []
        for w in name.lower().split(" "):
            if word_spans:
                caption += " "
            word_spans.append((len(caption), len(caption) + len(w)))
            caption += w
        caption += " . "
        spans.append(word_spans)
    caption = caption[:-1]
    enc = tokenizer(caption)
    pmap = torch.zeros(len(names), 256)
    for j, word_spans in enumerate(spans):
        for b, e in word_spans:
            t0 = next((t for t in (enc.char_to_token(b), enc.char_to_token(b + 1), enc.char_to_token(b + 2)) if t is not None), None)
            t1 = next((t for t in (enc.char_to_token(e - 1), enc.char_to_token(e - 2), enc.char_to_token(e - 3)) if t is not None), None)
            if t0 is not None and t1 is not None:
                pmap[j, t0 : t1 + 1] = 1
    return caption, pmap / (pmap.sum(-1, keepdim=True) + 1e-6)


def reference_ranking(logits, pred_boxes, pmap, width, height, k=300):
    prob = logits.sigmoid()[0]  # (Q, 256)
    scores = prob @ pmap.T  # (Q, C)
    values, index = torch.topk(scores.flatten(), k)
    query, label = index // scores.shape[1], index % scores.shape[1]
    cx, cy, w, h = pred_boxes[0][query].unbind(-1)
    boxes = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return values, query, label, boxes


def test_ranking_mode_equals_the_official_algorithm(tiny_detector):
    tokenizer = make_tokenizer()
    image = scene()
    prompt = tiny_detector.prompt(COCO_NAMES)
    caption, pmap = reference_positive_map(tokenizer, COCO_NAMES)
    assert prompt.chunks[0].caption.text == caption
    # raw outputs from a plain forward of the model, done here without the core
    inputs = tiny_detector.processor(images=image, text=caption, return_tensors="pt")
    with torch.no_grad():
        out = tiny_detector.model(**inputs)
    values, query, label, boxes = reference_ranking(out.logits, out.pred_boxes, pmap, *image.size)

    dets = tiny_detector.rank([image], prompt, num_select=300)[0]
    assert len(dets) == 300
    torch.testing.assert_close(dets.scores, values, atol=1e-5, rtol=0)
    assert dets.labels.tolist() == label.tolist()
    torch.testing.assert_close(dets.boxes, boxes, atol=1e-3, rtol=0)
    # the same (query, class) pairs: boxes identify queries
    assert len({tuple(b) for b in dets.boxes.round(decimals=2).tolist()}) == len({q for q in query.tolist()})


def test_labelling_mode_best_class_threshold_and_clip(tiny_detector):
    tokenizer = make_tokenizer()
    image = scene((500, 375))
    names = ["red square", "yellow circle", "sky"]
    caption, pmap = reference_positive_map(tokenizer, names)
    inputs = tiny_detector.processor(images=image, text=caption, return_tensors="pt")
    with torch.no_grad():
        out = tiny_detector.model(**inputs)
    scores = out.logits.sigmoid()[0] @ pmap.T
    best, label = scores.max(-1)
    threshold = float(best.median())  # keeps about half of the queries
    keep = best >= threshold
    cx, cy, w, h = out.pred_boxes[0].unbind(-1)
    W, H = image.size
    boxes = torch.stack([((cx - w / 2) * W).clamp(0, W), ((cy - h / 2) * H).clamp(0, H),
                         ((cx + w / 2) * W).clamp(0, W), ((cy + h / 2) * H).clamp(0, H)], -1)
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep &= nonempty

    dets = tiny_detector.detect([image], tiny_detector.prompt(names), box_threshold=threshold)[0]
    assert len(dets) == int(keep.sum()) > 0
    order = torch.argsort(dets.scores, descending=True)
    ref_order = torch.argsort(best[keep], descending=True)
    torch.testing.assert_close(dets.scores[order], best[keep][ref_order], atol=1e-5, rtol=0)
    assert dets.labels[order].tolist() == label[keep][ref_order].tolist()
    torch.testing.assert_close(dets.boxes[order], boxes[keep][ref_order], atol=1e-3, rtol=0)
    assert (dets.boxes[:, 0::2] >= 0).all() and (dets.boxes[:, 0::2] <= W).all()
    assert (dets.boxes[:, 1::2] >= 0).all() and (dets.boxes[:, 1::2] <= H).all()


def test_phrase_groups_take_the_max_over_their_phrases(tiny_detector):
    tokenizer = make_tokenizer()
    image = scene()
    phrases = ["car", "automobile", "person"]
    caption, pmap = reference_positive_map(tokenizer, phrases)
    inputs = tiny_detector.processor(images=image, text=caption, return_tensors="pt")
    with torch.no_grad():
        out = tiny_detector.model(**inputs)
    per_phrase = out.logits.sigmoid()[0] @ pmap.T  # (Q, 3)
    expected = torch.stack([per_phrase[:, :2].max(-1).values, per_phrase[:, 2]], -1)  # car|automobile, person

    dets = tiny_detector.rank([image], tiny_detector.prompt([["car", "automobile"], "person"]), num_select=200)[0]
    values, index = torch.topk(expected.flatten(), 200)
    torch.testing.assert_close(dets.scores, values, atol=1e-5, rtol=0)
    assert dets.labels.tolist() == (index % 2).tolist()


def test_300_names_give_classes_from_every_chunk(tiny_detector):
    names = [f"{COCO_NAMES[i % 80]} {i}" for i in range(300)]
    prompt = tiny_detector.prompt(names)
    assert len(prompt.chunks) >= 2
    image = scene()
    dets = tiny_detector.rank([image], prompt, num_select=50)[0]
    assert len(dets) == 50 * len(prompt.chunks)
    for j, chunk in enumerate(prompt.chunks):
        part = dets.select(slice(50 * j, 50 * (j + 1)))
        assert ((part.labels >= chunk.class_offset) & (part.labels < chunk.class_offset + chunk.num_classes)).all()
        # each chunk's part equals that chunk's classes run as their own prompt, labels offset
        alone = tiny_detector.rank([image], tiny_detector.prompt(names[chunk.class_offset : chunk.class_offset + chunk.num_classes]), 50)[0]
        torch.testing.assert_close(part.scores, alone.scores)
        assert part.labels.tolist() == (alone.labels + chunk.class_offset).tolist()
    labelled = tiny_detector.detect([image], prompt, box_threshold=0.0)[0]
    assert labelled.labels.max() >= prompt.chunks[-1].class_offset  # later chunks can win boxes too


def test_merge_keeps_the_best_class_per_box_across_chunks():
    a = Detections(torch.tensor([0.9, 0.5]), torch.tensor([0, 1]), torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60.0]]))
    b = Detections(torch.tensor([0.7, 0.95]), torch.tensor([5, 6]), torch.tensor([[0, 0, 10, 11], [50, 50, 60, 61.0]]))
    merged = merge_labelled([a, b], iou_threshold=0.7)
    assert merged.labels.tolist() == [6, 0] and merged.scores.tolist() == pytest.approx([0.95, 0.9])
    # overlap within one chunk is not merged (that is NMS's job, per class)
    c = Detections(torch.tensor([0.6, 0.4]), torch.tensor([2, 3]), torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.0]]))
    assert len(merge_labelled([c, Detections.empty()])) == 2


def test_class_nms_is_per_class():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30.0]])
    dets = Detections(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]), boxes)
    kept = class_nms(dets, iou_threshold=0.5)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept.labels.tolist() == [0, 1, 0]


def test_box_iou_known_values():
    a = torch.tensor([[0, 0, 10, 10.0]])
    b = torch.tensor([[5, 0, 15, 10.0], [20, 20, 30, 30.0], [0, 0, 10, 10.0], [0, 0, 0, 0.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0, 1.0, 0.0])
