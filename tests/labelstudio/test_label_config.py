"""Label config -> label sets, phrases, emitted labels; skipped labels; free-text prompts; bad configs."""
import pytest

from detection.phrases import to_words
from labelstudio.label_config import parse_label_config
from labelstudio.label_sets import LabelClass, LabelConfigError, SkippedItem, TextPromptError, model_version_hash
from labelstudio.text_prompts import TextPromptResolution, prompt_texts, resolve_text_prompt
from tests.label_studio_requests import ls_body


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


def rl(labels: str, name="label", extra="") -> str:
    return f'<RectangleLabels name="{name}" toName="image"{extra}>{labels}</RectangleLabels>'


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "the label config is empty: send the project's labeling config XML"),
        (config(rl('<Label value="A"/>'), images=""),
         'the label config has no <Image name="..." value="$key"/> tag to detect objects in'),
        (config('<Choices name="c" toName="image"><Choice value="x"/></Choices>'),
         "the label config has no <RectangleLabels>, <BrushLabels> or <PolygonLabels> (or <Rectangle>) control "
         'bound to an <Image>: add e.g. <RectangleLabels name="label" toName="image"><Label value="Car"/>'
         '</RectangleLabels> | Choices "c" skipped: this backend predicts <RectangleLabels>, <Rectangle>, '
         "<BrushLabels> and <PolygonLabels>, not <Choices>"),
        (config('<RectangleLabels name="l" toName="nowhere"><Label value="A"/></RectangleLabels>'),
         "the label config has no <RectangleLabels>, <BrushLabels> or <PolygonLabels> (or <Rectangle>) control "
         'bound to an <Image>: add e.g. <RectangleLabels name="label" toName="image"><Label value="Car"/>'
         '</RectangleLabels> | RectangleLabels "l" skipped: toName="nowhere" is not an <Image> of this config; bind it to image'),
        (config(rl("")),
         'nothing in the label config can be predicted: RectangleLabels "label" skipped: it has no '
         '<Label value="..."/>; add at least one label'),
        (config(rl('<Label/><Label value="  "/><Label value="..."/>', extra=' model_score_threshold="0.5"')),
         'nothing in the label config can be predicted: '
         'RectangleLabels "label": label "" skipped: the value is blank; give it a name | '
         'RectangleLabels "label": label "  " skipped: the value is blank; give it a name | '
         'RectangleLabels "label": label "..." skipped: it gives no phrase to prompt with; '
         'set predicted_values="..." to the words to look for'),
        (config(rl('<Label value="A"/>', extra=' model_score_threshold="high"')),
         'nothing in the label config can be predicted: RectangleLabels "label" skipped: '
         'model_score_threshold="high" must be a number in 0..1'),
    ],
)
def test_config_with_nothing_usable_is_refused_with_every_reason(xml, message):
    with pytest.raises(LabelConfigError) as err:
        parse_label_config(xml)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<View><Image", "not valid XML"),
        ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
         + config(rl('<Label value="&b;"/>')), "DOCTYPE or ENTITY"),
        ('<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + config(rl('<Label value="&e;"/>')),
         "DOCTYPE or ENTITY"),
    ],
)
def test_unreadable_configs_are_refused_with_a_message(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


MIXED = config(
    rl('<Label value="  "/><Label value="Cat"/><Label value="..."/><Label value="Cat"/>'
       '<Label value="Dog" alias="Cat"/><Label value="Car" predicted_values="car, truck"/>')
    + '<KeyPointLabels name="points" toName="image"><Label value="Cat"/></KeyPointLabels>'
    + '<Rectangle name="box" toName="image,text" predicted_values="bus, ..."/>'
    + '<RectangleLabels name="on-text" toName="text"><Label value="A"/></RectangleLabels>'
    + '<Choices name="quality" toName="image" model_skip="true"><Choice value="ok"/></Choices>',
    images='<Image name="image" value="$image"/><Text name="text" value="$text"/>',
)


def test_unusable_labels_are_skipped_and_reported_the_rest_served():
    mapping = parse_label_config(MIXED)
    assert [(s.from_name, s.kind, [(c.label, c.phrases) for c in s.classes]) for s in mapping.label_sets] == [
        ("label", "rectanglelabels", [("Cat", ("cat",)), ("Car", ("car", "truck"))]),
        ("box", "rectangle", [("bus", ("bus",))]),
    ]
    duplicate = ('"Cat" is already a label of this control (the value or alias of an earlier <Label>); '
                 "rename or remove this one")
    assert mapping.skipped == (
        SkippedItem("label", "  ", "the value is blank; give it a name"),
        SkippedItem("label", "...", 'it gives no phrase to prompt with; set predicted_values="..." to the words to look for'),
        SkippedItem("label", "Cat", duplicate),
        SkippedItem("label", "Dog", duplicate),
        SkippedItem("points", None, "this backend predicts <RectangleLabels>, <Rectangle>, <BrushLabels> and "
                    "<PolygonLabels>, not <KeyPointLabels>", "KeyPointLabels"),
        SkippedItem("box", None, 'toName="text" is not an <Image> of this config; bind it to image', "Rectangle"),
        SkippedItem("box", "...", "it has no words to prompt with; remove it from predicted_values", "Rectangle"),
        SkippedItem("on-text", None, 'toName="text" is not an <Image> of this config; bind it to image'),
    )  # a control the user switched off (model_skip) is not reported
    assert mapping.describe_skipped()[:1] + mapping.describe_skipped()[4:5] == (
        'RectangleLabels "label": label "  " skipped: the value is blank; give it a name',
        'KeyPointLabels "points" skipped: this backend predicts <RectangleLabels>, <Rectangle>, <BrushLabels> and '
        "<PolygonLabels>, not <KeyPointLabels>",
    )


def test_skipped_labels_do_not_change_the_model_version():
    clean = config(rl('<Label value="Cat"/><Label value="Car" predicted_values="car, truck"/>')
                   + '<Rectangle name="box" toName="image" predicted_values="bus"/>')
    assert parse_label_config(MIXED).fingerprint() == parse_label_config(clean).fingerprint()
    assert model_version_hash(parse_label_config(MIXED), {}) == model_version_hash(parse_label_config(clean), {})
    other = config(rl('<Label value="Cat"/><Label value="Car"/>') + '<Rectangle name="box" toName="image" predicted_values="bus"/>')
    assert model_version_hash(parse_label_config(other), {}) != model_version_hash(parse_label_config(clean), {})


def test_without_drops_a_label_found_unusable_later_and_records_why():
    two_images = config(
        '<RectangleLabels name="label" toName="left,right"><Label value="Cat"/><Label value="Remote" alias="RC"/>'
        '</RectangleLabels>',
        images='<Image name="left" value="$a"/><Image name="right" value="$b"/>',
    )
    mapping = parse_label_config(two_images)
    reason = "its phrase needs more than 256 tokens; shorten it"
    smaller = mapping.without("label", "RC", reason)
    assert [(s.to_name, [c.label for c in s.classes]) for s in smaller.label_sets] == [("left", ["Cat"]), ("right", ["Cat"])]
    assert smaller.skipped == (SkippedItem("label", "Remote", reason),)
    assert smaller.fingerprint() == parse_label_config(two_images.replace('<Label value="Remote" alias="RC"/>', "")).fingerprint()
    assert [c.label for c in mapping.label_sets[0].classes] == ["Cat", "RC"]  # the cached mapping is unchanged
    with pytest.raises(KeyError):
        mapping.without("label", "Dog", reason)
    with pytest.raises(LabelConfigError) as err:
        smaller.without("label", "Cat", "no token")
    assert str(err.value) == (
        'nothing in the label config can be predicted: RectangleLabels "label": label "Remote" skipped: '
        f'{reason} | RectangleLabels "label": label "Cat" skipped: no token'
    )


def test_without_keeps_a_rectangle_control_for_typed_prompts():
    mapping = parse_label_config(config('<Rectangle name="box" toName="image" predicted_values="bus"/>'
                                        '<TextArea name="prompt" toName="image"/>'))
    smaller = mapping.without("box", "bus", "no token")
    assert [(s.kind, s.classes) for s in smaller.label_sets] == [("rectangle", ())]
    assert smaller.describe_skipped() == ('Rectangle "box": label "bus" skipped: no token',)


# ----- free-text prompts -----------------------------------------------------------------------------

CONFIG = ls_body("setup")["schema"]


def typed(*texts, from_name="prompt", to_name="image"):
    return {"result": [{"from_name": from_name, "to_name": to_name, "type": "textarea", "value": {"text": list(texts)}}]}


def classes_of(label_sets):
    return [(s.from_name, [(c.label, c.phrases) for c in s.classes]) for s in label_sets]


def test_interactive_context_from_label_studio_drives_the_prompt():
    mapping = parse_label_config(CONFIG)
    context = ls_body("predict-interactive")["params"]["context"]
    resolution = resolve_text_prompt(mapping, prompt_texts(mapping, context))
    assert classes_of(resolution.label_sets) == [("label", [("Cat", ("kitten",))])]
    assert resolution.unknown_message is None


def test_phrases_match_value_alias_predicted_value_and_explicit_mapping():
    mapping = parse_label_config(CONFIG)
    context = typed("REMOTE, rc; traffic light\nred thing -> trafficlight", "Cat")
    assert classes_of(resolve_text_prompt(mapping, prompt_texts(mapping, context)).label_sets) == [
        ("label", [("RC", ("remote", "rc")), ("TrafficLight", ("traffic light", "red thing")), ("Cat", ("cat",))])
    ]


USABLE = "use one of: Cat, RC (Remote), TrafficLight"


def test_unknown_phrase_next_to_known_ones_is_reported_and_the_known_ones_served():
    mapping = parse_label_config(CONFIG)
    resolution = resolve_text_prompt(mapping, prompt_texts(mapping, typed("cat, unicorn")))
    assert resolution == TextPromptResolution(
        label_sets=(mapping.label_sets[0].with_classes([LabelClass("Cat", "Cat", None, ("cat",))]),),
        unknown_message=f"the prompt 'unicorn' matches no label of this project; {USABLE}; "
                        "or map a phrase explicitly, e.g. 'unicorn -> Cat'",
    )
    resolution = resolve_text_prompt(mapping, prompt_texts(mapping, typed("unicorn, rc, zebra; red car ->; ...")))
    assert classes_of(resolution.label_sets) == [("label", [("RC", ("rc",))])]
    assert resolution.unknown_message == (
        "the prompt 'red car ->' is incomplete: write it as 'phrase -> Label' | "
        "the prompt '...' has no words to look for | "
        f"the prompts 'unicorn', 'zebra' match no label of this project; {USABLE}; "
        "or map a phrase explicitly, e.g. 'unicorn -> Cat'"
    )


def test_prompt_with_no_known_phrase_names_the_usable_labels():
    mapping = parse_label_config(CONFIG)
    with pytest.raises(TextPromptError) as err:
        resolve_text_prompt(mapping, prompt_texts(mapping, typed("dog")))
    assert str(err.value) == (
        f"the prompt 'dog' matches no label of this project; {USABLE}; or map a phrase explicitly, e.g. 'dog -> Cat'"
    )
    with pytest.raises(TextPromptError) as err:
        resolve_text_prompt(mapping, prompt_texts(mapping, typed("dog -> Horse", "->")))
    assert str(err.value) == (
        "the prompt '->' is incomplete: write it as 'phrase -> Label' | "
        f"the prompt 'dog -> Horse' matches no label of this project; {USABLE}; "
        "or map a phrase explicitly, e.g. 'dog -> Cat'"
    )


def test_context_without_prompt_keeps_the_config_labels():
    mapping = parse_label_config(CONFIG)
    for context in (None, {}, {"result": []}, typed("cat", from_name="other")):
        assert resolve_text_prompt(mapping, prompt_texts(mapping, context)) == TextPromptResolution(mapping.active)


def test_unmapped_phrase_becomes_a_rectangle_when_the_config_has_one():
    mapping = parse_label_config(
        config('<RectangleLabels name="l" toName="image"><Label value="Car"/></RectangleLabels>'
               '<Rectangle name="box" toName="image"/><TextArea name="prompt" toName="image"/>')
    )
    resolution = resolve_text_prompt(mapping, prompt_texts(mapping, typed("car, yellow bus")))
    assert [(s.kind, [c.phrases for c in s.classes]) for s in resolution.label_sets] == [
        ("rectanglelabels", [("car",)]),
        ("rectangle", [("yellow bus",)]),
    ]
    assert resolution.unknown_message is None
