"""Label config -> label sets, phrases, emitted labels; free-text prompts; bad configs."""
import pytest

from backend.label_config import (
    LabelConfigError,
    TextPromptError,
    parse_label_config,
    prompt_texts,
    resolve_text_prompt,
    to_words,
)
from tests.backend.backend_helpers import ls_body


def config(body: str, images='<Image name="image" value="$image"/>') -> str:
    return f"<View>{images}{body}</View>"


def test_verbatim_label_studio_config():
    mapping = parse_label_config(ls_body("setup")["schema"])
    (label_set,) = mapping.label_sets
    assert (label_set.from_name, label_set.to_name, label_set.data_key, label_set.kind) == (
        "label", "image", "image", "rectanglelabels",
    )
    assert [(c.label, c.phrases) for c in label_set.classes] == [
        ("Cat", ("cat", "kitten")),
        ("RC", ("remote control",)),  # alias emitted, predicted_values prompted
        ("TrafficLight", ("traffic light",)),  # value made into words
    ]
    assert [(t.from_name, t.to_name) for t in mapping.text_prompts] == [("prompt", "image")]


@pytest.mark.parametrize(
    "value, words",
    [("TrafficLight", "traffic light"), ("traffic_light", "traffic light"), ("fire-hydrant", "fire hydrant"),
     ("HTTPServer", "http server"), ("person", "person"), ("Cell Phone", "cell phone")],
)
def test_value_made_into_words(value, words):
    assert to_words(value) == words


def test_several_controls_images_thresholds_and_skip():
    mapping = parse_label_config(
        config(
            '<RectangleLabels name="animals" toName="left" model_score_threshold="0.6">'
            '<Label value="Dog"/></RectangleLabels>'
            '<RectangleLabels name="vehicles" toName="right"><Label value="Car"/></RectangleLabels>'
            '<RectangleLabels name="skipped" toName="left" model_skip="true"><Label value="Cat"/></RectangleLabels>'
            '<Choices name="c" toName="left"><Choice value="x"/></Choices>',
            images='<Image name="left" value="$a"/><Image name="right" value="$b"/>',
        )
    )
    summary = [(s.from_name, s.to_name, s.data_key, s.threshold, s.skip) for s in mapping.label_sets]
    assert summary == [
        ("animals", "left", "a", 0.6, False),
        ("vehicles", "right", "b", None, False),
        ("skipped", "left", "a", None, True),
    ]
    assert [s.from_name for s in mapping.active] == ["animals", "vehicles"]


def test_rectangle_control_gives_unlabeled_boxes():
    mapping = parse_label_config(config('<Rectangle name="box" toName="image" predicted_values="car, person"/>'))
    (label_set,) = mapping.label_sets
    assert label_set.kind == "rectangle"
    assert [c.phrases for c in label_set.classes] == [("car",), ("person",)]


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("<View><Image", "not valid XML"),
        (config('<RectangleLabels name="l" toName="image"><Label value="A"/></RectangleLabels>', images=""), "no <Image"),
        (config('<Choices name="c" toName="image"><Choice value="x"/></Choices>'), "no <RectangleLabels>"),
        (config('<RectangleLabels name="l" toName="image"></RectangleLabels>'), "has no <Label"),
        (config('<RectangleLabels name="l" toName="image"><Label/></RectangleLabels>'), "without a value"),
        (config('<RectangleLabels name="l" toName="image"><Label value="A"/><Label value="A"/></RectangleLabels>'),
         "more than once"),
        (config('<RectangleLabels name="l" toName="image"><Label value="A" alias="B"/><Label value="B"/>'
                '</RectangleLabels>'), "more than once"),
        (config('<RectangleLabels name="l" toName="nowhere"><Label value="A"/></RectangleLabels>'),
         "not an <Image>"),
        (config('<RectangleLabels name="l" toName="image" model_score_threshold="high"><Label value="A"/>'
                '</RectangleLabels>'), "model_score_threshold"),
        ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
         + config('<RectangleLabels name="l" toName="image"><Label value="&b;"/></RectangleLabels>'),
         "DOCTYPE or ENTITY"),
        ('<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
         + config('<RectangleLabels name="l" toName="image"><Label value="&e;"/></RectangleLabels>'),
         "DOCTYPE or ENTITY"),
    ],
)
def test_bad_configs_are_refused_with_a_message(xml, message):
    with pytest.raises(LabelConfigError, match=message.replace("(", r"\(")):
        parse_label_config(xml)


# ----- free-text prompts -----------------------------------------------------------------------------

CONFIG = ls_body("setup")["schema"]


def typed(*texts, from_name="prompt", to_name="image"):
    return {"result": [{"from_name": from_name, "to_name": to_name, "type": "textarea", "value": {"text": list(texts)}}]}


def classes_of(label_sets):
    return [(s.from_name, [(c.label, c.phrases) for c in s.classes]) for s in label_sets]


def test_interactive_context_from_label_studio_drives_the_prompt():
    mapping = parse_label_config(CONFIG)
    context = ls_body("predict-interactive")["params"]["context"]
    assert classes_of(resolve_text_prompt(mapping, prompt_texts(mapping, context))) == [
        ("label", [("Cat", ("kitten",))])
    ]


def test_phrases_match_value_alias_predicted_value_and_explicit_mapping():
    mapping = parse_label_config(CONFIG)
    context = typed("REMOTE, rc; traffic light\nred thing -> trafficlight", "Cat")
    assert classes_of(resolve_text_prompt(mapping, prompt_texts(mapping, context))) == [
        ("label", [("RC", ("remote", "rc")), ("TrafficLight", ("traffic light", "red thing")), ("Cat", ("cat",))])
    ]


def test_unmapped_phrase_names_the_usable_labels():
    mapping = parse_label_config(CONFIG)
    with pytest.raises(TextPromptError) as err:
        resolve_text_prompt(mapping, prompt_texts(mapping, typed("dog")))
    assert "'dog'" in str(err.value)
    assert "Cat, RC (Remote), TrafficLight" in str(err.value)
    with pytest.raises(TextPromptError, match="matches no label"):
        resolve_text_prompt(mapping, prompt_texts(mapping, typed("dog -> Horse")))


def test_context_without_prompt_keeps_the_config_labels():
    mapping = parse_label_config(CONFIG)
    for context in (None, {}, {"result": []}, typed("cat", from_name="other")):
        assert resolve_text_prompt(mapping, prompt_texts(mapping, context)) == mapping.active


def test_unmapped_phrase_becomes_a_rectangle_when_the_config_has_one():
    mapping = parse_label_config(
        config('<RectangleLabels name="l" toName="image"><Label value="Car"/></RectangleLabels>'
               '<Rectangle name="box" toName="image"/><TextArea name="prompt" toName="image"/>')
    )
    sets = resolve_text_prompt(mapping, prompt_texts(mapping, typed("car, yellow bus")))
    assert [(s.kind, [c.phrases for c in s.classes]) for s in sets] == [
        ("rectanglelabels", [("car",)]),
        ("rectangle", [("yellow bus",)]),
    ]
