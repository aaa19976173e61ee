"""Smart boxes as examples ("find all like this"): which controls are exemplar tools, the example and negative
boxes of an interactive context, where the answer goes, and what a context that cannot be answered says."""
from __future__ import annotations

import pytest

from labelstudio.label_config import parse_label_config
from labelstudio.smart_tools import SmartPromptError, exemplar_prompts

CONFIG = ('<View><Image name="image" value="$image"/>'
          '<RectangleLabels name="find" toName="image" smart="true"><Label value="Apple"/><Label value="Pear"/>'
          '</RectangleLabels>'
          '<BrushLabels name="mask" toName="image"><Label value="Apple"/></BrushLabels>'
          '<PolygonLabels name="outline" toName="image" model_skip="true"><Label value="Apple"/></PolygonLabels>'
          '<KeyPointLabels name="click" toName="image" smart="true"><Label value="Apple"/></KeyPointLabels>'
          '</View>')


def box(x, y, w, h, label="Apple", positive=None, from_name="find"):
    item = {"from_name": from_name, "to_name": "image", "type": "rectanglelabels",
            "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}}
    if positive is not None:
        item["is_positive"] = positive
    return item


def test_smart_rectangles_are_exemplar_tools_unless_they_say_one():
    mapping = parse_label_config(CONFIG)
    assert [(t.from_name, t.mode) for t in mapping.exemplar_tools] == [("find", "")]
    one = parse_label_config(CONFIG.replace('smart="true"><Label value="Apple"/><Label value="Pear"/>',
                                            'smart="true" model_smart="one"><Label value="Apple"/><Label value="Pear"/>'))
    assert one.exemplar_tools == ()
    odd = parse_label_config(CONFIG.replace('name="find" toName="image" smart="true"',
                                            'name="find" toName="image" smart="true" model_smart="many"'))
    assert [t.mode for t in odd.exemplar_tools] == [""]
    assert odd.skipped[0].describe() == ('RectangleLabels "find" skipped: model_smart="many" is not "all" (find all '
                                         'like this) or "one" (the mask of this one object); its smart boxes answer as '
                                         'if it were not set')


def test_the_last_positive_box_is_the_example_and_negatives_go_with_it():
    mapping = parse_label_config(CONFIG)
    context = {"result": [box(1, 1, 5, 5), box(10, 20, 30, 40), box(0, 0, 10, 10, positive=False),
                          {"from_name": "click", "to_name": "image", "type": "keypointlabels",
                           "value": {"x": 5, "y": 5, "keypointlabels": ["Apple"]}}]}
    (prompt,) = exemplar_prompts(mapping, context)
    assert (prompt.label, prompt.positive, prompt.negatives) == ("Apple", (10, 20, 40, 60), ((0, 0, 10, 10),))
    # Answered where "Apple" is a label and the control is predicted: boxes in "find", masks in "mask"; the
    # model_skip polygon control gets nothing.
    assert [s.from_name for s in prompt.answer_sets] == ["find", "mask"]
    assert prompt.in_pixels((200, 100)) == ([20.0, 20.0, 80.0, 60.0], [[0.0, 0.0, 20.0, 10.0]])
    (pear,) = exemplar_prompts(mapping, {"result": [box(10, 20, 30, 40, "Pear")]})
    assert [s.from_name for s in pear.answer_sets] == ["find"]
    assert exemplar_prompts(mapping, {"result": []}) == () and exemplar_prompts(mapping, None) == ()


@pytest.mark.parametrize("result, message", [
    ([box(10, 20, 30, 40, positive=False)], "only negative example boxes on 'image': draw one box around an example to find"),
    ([box(10, 20, 30, 40, "Banana")], "the smart box's label 'Banana' is not a label of a <RectangleLabels>, "
     '<BrushLabels> or <PolygonLabels> on "image": add <Label value="Banana"/> to the control that should receive '
     "the instances found"),
    ([{**box(10, 20, 30, 40), "value": {"x": 10, "y": 20, "width": 30, "height": 40}}],
     "a smart box on 'image' has no label: pick a label first, then draw the example"),
    ([box(10, 20, 0, 40)], "the example box on 'image' has no area: draw it around the object"),
    ([box(10, 20, "a", 40)], "a smart region's value.width must be a number (percent of the image), got 'a'"),
])
def test_contexts_that_cannot_be_answered_say_what_to_do(result, message):
    with pytest.raises(SmartPromptError) as err:
        exemplar_prompts(parse_label_config(CONFIG), {"result": result})
    assert str(err.value) == message
