"""Caption, spans, positive map and chunking, checked against the official algorithm by hand."""
import pytest
import torch

from detection import PromptError, build_prompt, caption_for, positive_map
from evaluation.coco.names import COCO_NAMES
from tests.model_factory import make_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def test_coco_caption_is_official_195_tokens(tokenizer):
    caption = caption_for(COCO_NAMES)
    assert caption.text == " . ".join(COCO_NAMES) + " ."
    assert len(tokenizer(caption.text)["input_ids"]) == 195
    # transformers' list form "person. bicycle. ..." tokenizes to the same ids
    assert tokenizer(caption.text)["input_ids"] == tokenizer(". ".join(COCO_NAMES) + ".")["input_ids"]


def test_spans_are_per_word_and_point_at_the_words():
    caption = caption_for(["Traffic Light", "person"])
    assert caption.text == "traffic light . person ."
    assert caption.phrase_spans == (((0, 7), (8, 13)), ((16, 22),))
    for spans, words in zip(caption.phrase_spans, [["traffic", "light"], ["person"]]):
        assert [caption.text[b:e] for b, e in spans] == words


def test_positive_map_hand_worked_example(tokenizer):
    # "car . traffic light ." -> [CLS] car . traffic light . [SEP]
    caption = caption_for(["car", "traffic light"])
    enc = tokenizer(caption.text)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "car", ".", "traffic", "light", ".", "[SEP]"]
    pmap = positive_map(enc, caption.phrase_spans)
    expected = torch.zeros(2, 256)
    expected[0, 1] = 1 / (1 + 1e-6)
    expected[1, 3] = expected[1, 4] = 1 / (2 + 1e-6)
    torch.testing.assert_close(pmap, expected)


@pytest.mark.parametrize(
    "name, pieces",
    [("hair drier", ["hair", "dr", "##ier"]), ("fire hydrant", ["fire", "hydra", "##nt"]), ("toothbrush", ["tooth", "##brush"])],
)
def test_multi_piece_names_cover_all_their_pieces(tokenizer, name, pieces):
    caption = caption_for(COCO_NAMES)
    enc = tokenizer(caption.text)
    pmap = positive_map(enc, caption.phrase_spans)
    row = pmap[COCO_NAMES.index(name)]
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    covered = [tokens[i] for i in torch.nonzero(row).flatten().tolist()]
    assert covered == pieces
    assert row.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_positive_map_char_to_token_fallbacks(tokenizer):
    text = "car . red bus ."
    enc = tokenizer(text)
    # a span starting on the space before "red" (char 5 is ' ') falls back to b+1, then b+2
    # a span ending past "bus" on " ." falls back to e-2 / e-3
    pmap = positive_map(enc, [((5, 13),), ((4, 15),)])
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])  # [CLS] car . red bus . [SEP]
    assert [tokens[i] for i in torch.nonzero(pmap[0]).flatten()] == ["red", "bus"]
    # (4, 15): char 4 is '.', a token itself: the span starts there; end-1=14 is '.' -> token 5
    assert [tokens[i] for i in torch.nonzero(pmap[1]).flatten()] == [".", "red", "bus", "."]


def test_span_with_no_token_is_skipped(tokenizer):
    enc = tokenizer("a")
    pmap = positive_map(enc, [((40, 45),)])
    assert pmap.sum() == 0


def test_coco_is_one_chunk_equal_to_the_official_positive_map(tokenizer):
    prompt = build_prompt(tokenizer, COCO_NAMES)
    assert len(prompt.chunks) == 1 and prompt.chunks[0].num_tokens == 195
    caption = caption_for(COCO_NAMES)
    torch.testing.assert_close(prompt.chunks[0].phrase_map, positive_map(tokenizer(caption.text), caption.phrase_spans))
    assert prompt.chunks[0].phrase_to_class.tolist() == list(range(80))


def test_300_names_are_chunked_without_truncation_or_splitting(tokenizer):
    names = [f"{COCO_NAMES[i % 80]} {i}" for i in range(300)]  # "person 0", ... unique, 2 words
    prompt = build_prompt(tokenizer, names)
    assert len(prompt.chunks) > 1
    seen = []
    for chunk in prompt.chunks:
        assert chunk.num_tokens <= 256
        assert chunk.caption.text == caption_for(names[chunk.class_offset : chunk.class_offset + chunk.num_classes]).text
        seen.extend(range(chunk.class_offset, chunk.class_offset + chunk.num_classes))
        # greedy: the next class would not have fitted
        nxt = chunk.class_offset + chunk.num_classes
        if nxt < len(names):
            longer = caption_for(names[chunk.class_offset : nxt + 1]).text
            assert len(tokenizer(longer)["input_ids"]) > 256
    assert seen == list(range(300))


def test_fixed_chunk_size_as_mmdetection(tokenizer):
    prompt = build_prompt(tokenizer, COCO_NAMES, chunk_size=30)
    assert [c.num_classes for c in prompt.chunks] == [30, 30, 20]
    assert [c.class_offset for c in prompt.chunks] == [0, 30, 60]
    with pytest.raises(PromptError, match="smaller chunk size"):
        build_prompt(tokenizer, [f"{n} {n} {n}" for n in COCO_NAMES], chunk_size=80)


def test_synonyms_stay_in_one_chunk_and_map_to_their_class(tokenizer):
    classes = [["car", "automobile", "sedan"], "person", ["tv", "television"]]
    prompt = build_prompt(tokenizer, classes)
    chunk = prompt.chunks[0]
    assert chunk.caption.text == "car . automobile . sedan . person . tv . television ."
    assert chunk.phrase_to_class.tolist() == [0, 0, 0, 1, 2, 2]


@pytest.mark.parametrize("classes, message", [([], "empty"), (["  "], "no usable phrase"), ([["", " . "]], "no usable phrase")])
def test_bad_label_sets_are_refused(tokenizer, classes, message):
    with pytest.raises(PromptError, match=message):
        build_prompt(tokenizer, classes)


def test_a_class_longer_than_the_text_limit_is_an_error(tokenizer):
    with pytest.raises(PromptError, match="alone needs more than 256 tokens"):
        build_prompt(tokenizer, ["ok", " ".join(["word"] * 300)])
