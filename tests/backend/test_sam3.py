"""SAM 3 served by the backend: loaded by its config through MODEL, prompts per label, boxes and its own masks in
Label Studio's format (equal to `Sam3Detector`'s output converted here), no SAM stage for mask controls, "find
all like this" from a smart box, bulk pre-labelling with it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from backend.prelabel import prelabel
from backend.serving.devices import PredictorPool, load_on
from backend.settings import Settings
from detection import SAM3, ModelLoadError
from detection.sam3 import Sam3Detector, Sam3DetectorConfig
from labelstudio.regions import rle_to_mask
from tests.backend.standin_label_studio import StandInLabelStudio
from tests.backend.background_jobs import all_ended
from tests.sam3_factory import tiny_sam3_dir
from tests.waiting import wait_until

LABELS = '<Label value="Cat" predicted_values="cat, kitten"/><Label value="TrafficLight"/>'
CLASSES = [["cat", "kitten"], ["traffic light"]]
NAMES = ["Cat", "TrafficLight"]
MIXED = ('<View><Image name="image" value="$image"/>'
         f'<RectangleLabels name="boxes" toName="image">{LABELS}</RectangleLabels>'
         f'<BrushLabels name="brush" toName="image">{LABELS}</BrushLabels></View>')
BRUSH_ONLY = f'<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image">{LABELS}</BrushLabels></View>'
FIND_ALL = ('<View><Image name="image" value="$image"/>'
            '<RectangleLabels name="boxes" toName="image" smart="true"><Label value="Apple"/><Label value="Pear"/>'
            '</RectangleLabels>'
            '<BrushLabels name="brush" toName="image"><Label value="Apple"/></BrushLabels></View>')
SIZE = (67, 50)  # (width, height), not the model's square
# The tiny random model scores at most ~0.44, under SAM 3's default 0.5: the tests set BOX_THRESHOLD=0.3.
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The tiny SAM 3 under a name that says nothing of its family: the backend reads its config."""
    return shutil.copytree(tiny_sam3_dir("sam3"), tmp_path_factory.mktemp("models") / "my-detector")


@pytest.fixture(scope="module")
def reference(checkpoint) -> Sam3Detector:
    """The model code's own detector, loaded separately: what the backend's answers must equal."""
    return Sam3Detector.load(Sam3DetectorConfig(model=str(checkpoint), device="cpu"))


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(root / "noise.png")
    return root


@pytest.fixture
def make_predictor(checkpoint, media, tmp_path):
    def make(**env):
        base = {"MODEL": str(checkpoint), "DEVICE": "cpu", "LOCAL_FILES_DOCUMENT_ROOT": str(media),
                "BOX_THRESHOLD": str(THRESHOLD),
                "STATE_DIR": str(tmp_path / "state"),
                # A mask model that does not exist: loading it would fail the request that needed it.
                "SAM_MODEL": str(tmp_path / "no-sam-model-here")}
        base.update({k: str(v) for k, v in env.items()})
        return load_on(Settings.from_env(base), "cpu")

    return make


def task(task_id=1):
    return {"id": task_id, "data": {"image": "/data/local-files/?d=noise.png"}}


def image(media) -> Image.Image:
    return Image.open(media / "noise.png").convert("RGB")


def percent_box(box, size=SIZE) -> dict:
    """A pixel xyxy box as Label Studio's percent x/y/width/height, converted here."""
    (x0, y0, x1, y1), (w, h) = box, size
    return {"x": x0 / w * 100, "y": y0 / h * 100, "width": (x1 - x0) / w * 100, "height": (y1 - y0) / h * 100}


def assert_box(region, box, score, label, from_name="boxes"):
    assert (region["type"], region["from_name"], region["to_name"]) == ("rectanglelabels", from_name, "image")
    assert (region["original_width"], region["original_height"]) == SIZE
    value = region["value"]
    for key, expected in percent_box(box).items():
        assert value[key] == pytest.approx(expected, abs=1e-9)
    assert value["rectanglelabels"] == [label] and region["score"] == pytest.approx(score, abs=1e-9)


def assert_brush(region, mask, score, label, from_name="brush"):
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", from_name, "image")
    assert region["value"]["brushlabels"] == [label] and region["score"] == pytest.approx(score, abs=1e-9)
    assert np.array_equal(rle_to_mask(region["value"]["rle"], *SIZE), mask.numpy())


def test_a_sam3_checkpoint_is_served_by_its_config_with_its_family_defaults(make_predictor, checkpoint, caplog):
    predictor = make_predictor(BOX_THRESHOLD="")  # unset
    assert predictor.detector.family is SAM3
    assert predictor.box_threshold == 0.5  # BOX_THRESHOLD unset: the family's default
    assert make_predictor(BOX_THRESHOLD="0.25").box_threshold == 0.25
    assert predictor.model_name == "sam3-my-detector"  # model_version names the family and the checkpoint
    assert predictor.model_version(MIXED).startswith("sam3-my-detector-")
    assert predictor.masks.state == "not loaded"  # SAM_MODEL is not loaded at start for a family with own masks
    assert PredictorPool.around(predictor).box_threshold == 0.5  # what the server (and Start Training) holds
    # GROUNDING_DINO_MODEL still works; MODEL wins when both are set.
    legacy = Settings.from_env({"GROUNDING_DINO_MODEL": str(checkpoint)})
    assert legacy.model == str(checkpoint)
    with caplog.at_level("WARNING"):
        assert Settings.from_env({"MODEL": str(checkpoint), "GROUNDING_DINO_MODEL": "other"}).model == str(checkpoint)
    assert f"MODEL={checkpoint} and GROUNDING_DINO_MODEL=other are both set: using MODEL" in caplog.text


def test_a_partial_sam3_checkpoint_is_a_start_error_naming_it(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(checkpoint, tmp_path / "partial")
    weights = load_file(broken / "model.safetensors")
    dropped = sorted(weights)[:2]
    save_file({k: v for k, v in weights.items() if k not in dropped}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        load_on(Settings.from_env({"MODEL": str(broken), "DEVICE": "cpu"}), "cpu")
    assert str(err.value).startswith(f"could not load {str(broken)!r}: its weights do not match Sam3Model "
                                     f"(2 missing weights: {dropped[0]}, {dropped[1]})")


@pytest.mark.slow
def test_python_m_backend_stops_on_a_partial_sam3_checkpoint_with_one_line(checkpoint, tmp_path):
    from tests.backend.processes import run_backend

    broken = shutil.copytree(checkpoint, tmp_path / "partial")
    (broken / "tokenizer.json").unlink()  # transformers then builds a CLIP tokenizer without a vocabulary
    result = run_backend({"MODEL": str(broken), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}, "--port", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line == (f"error: could not load SAM 3 model {str(broken)!r}: its tokenizer has no vocabulary (the word "
                    "'visual' tokenizes to the unknown token): tokenizer.json, or vocab.json and merges.txt, is missing "
                    "or damaged; re-download the checkpoint or point at the right directory")


def test_a_gated_checkpoint_is_a_start_error_with_the_login_recipe(monkeypatch):
    import httpx2
    import transformers.utils.hub as hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError

    import detection.family as family_module

    def refuse(repo_id, filename, **kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/{filename}")
        raise GatedRepoError("401 Client Error: gated repo", response=httpx2.Response(401, request=request))

    monkeypatch.setattr(hub, "hf_hub_download", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(family_module, "use_cache_only_when_offline", lambda name: False)
    with pytest.raises(ModelLoadError) as err:
        load_on(Settings.from_env({"MODEL": "facebook/sam3", "DEVICE": "cpu"}), "cpu")
    assert str(err.value) == (
        "could not load model 'facebook/sam3': the hub refused access (401): the checkpoint is gated. Accept the "
        "licence on the model page (https://huggingface.co/facebook/sam3) and log in (`hf auth login` or HF_TOKEN) "
        "with the account that accepted it; or to run offline, download it where there is internet (`hf download "
        "facebook/sam3 --local-dir DIR`) and point MODEL (backend) or --model (evaluation) at DIR")
    assert err.value.__cause__ is None


def test_one_query_per_phrase_and_an_unusable_label_is_skipped_with_its_reason(make_predictor):
    predictor = make_predictor()
    plan = predictor.plan(MIXED)
    (label_set, prompt), _ = plan.prompts
    assert prompt.classes == (("cat", "kitten"), ("traffic light",))
    assert predictor.detector.describe_prompt(prompt) == {"num_queries": 3, "phrases": ["cat", "kitten", "traffic light"]}
    long = " ".join(["cat"] * 40)
    mapping = predictor.mapping(MIXED.replace('<Label value="TrafficLight"/>', f'<Label value="Long" predicted_values="{long}"/>'))
    assert [c.label for s in mapping.active for c in s.classes] == ["Cat", "Cat"]
    assert "SAM 3 takes at most 32" in mapping.skipped[0].reason


def test_boxes_and_own_masks_of_a_mixed_config_from_one_pass_equal_the_model_code(make_predictor, reference, media):
    predictor = make_predictor()
    passes = []
    inner = predictor.detector.detect
    predictor.detector.detect = lambda *a, **k: passes.append(k.get("masks")) or inner(*a, **k)
    (item,) = predictor.predict_tasks([task()], MIXED)
    assert passes == [True]  # one pass for both controls, masks included
    (dets,) = reference.detect([image(media)], CLASSES, threshold=THRESHOLD, masks=True)
    assert 0 < len(dets) < 3 * 20  # the threshold keeps some, not all
    boxes = [r for r in item["result"] if r["type"] == "rectanglelabels"]
    brushes = [r for r in item["result"] if r["type"] == "brushlabels"]
    kept = [k for k in range(len(dets)) if dets.masks[k].any()]
    assert len(boxes) == len(dets) and len(brushes) == len(kept)
    for region, k in zip(boxes, range(len(dets))):  # both highest score first
        assert_box(region, dets.boxes[k].tolist(), float(dets.scores[k]), NAMES[int(dets.labels[k])])
    for region, k in zip(brushes, kept):
        assert_brush(region, dets.masks[k], float(dets.scores[k]), NAMES[int(dets.labels[k])])
    assert item["model_version"] == predictor.model_version(MIXED)
    assert predictor.masks.state == "not loaded"


@pytest.mark.slow
def test_a_brush_only_project_gets_masks_without_any_mask_model(make_predictor, reference, media, monkeypatch):
    predictor = make_predictor()
    monkeypatch.setattr(predictor.masks, "_loader", lambda config: pytest.fail("the SAM mask model was loaded"))
    version = predictor.model_version(BRUSH_ONLY)  # /setup of a mask project starts no mask-model load
    (item,) = predictor.predict_tasks([task()], BRUSH_ONLY)
    (dets,) = reference.detect([image(media)], CLASSES, threshold=THRESHOLD, masks=True)
    kept = [k for k in range(len(dets)) if dets.masks[k].any()]
    assert kept and len(item["result"]) == len(kept)
    for region, k in zip(item["result"], kept):
        assert_brush(region, dets.masks[k], float(dets.scores[k]), NAMES[int(dets.labels[k])])
    assert item["model_version"] == version and predictor.masks.state == "not loaded"
    # The version does not depend on SAM_MODEL, which these masks never use.
    assert make_predictor(SAM_MODEL="another").model_version(BRUSH_ONLY) == version


def smart_box(x, y, w, h, label="Apple", positive=True):
    region = {"from_name": "boxes", "to_name": "image", "type": "rectanglelabels", "origin": "manual",
              "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}
    return region if positive else {**region, "is_positive": False}


def test_find_all_like_this_answers_every_instance_of_the_example_with_the_picked_label(make_predictor, reference, media):
    predictor = make_predictor()
    context = {"result": [smart_box(10, 20, 40, 50)]}
    (item,) = predictor.predict_tasks([task()], FIND_ALL, context=context)
    # The example in pixels: 10..50 % of 67 px wide, 20..70 % of 50 px high.
    example = [6.7, 10.0, 33.5, 35.0]
    found = reference.find_like(image(media), example, threshold=THRESHOLD, masks=True)
    assert len(found) > 0
    boxes = [r for r in item["result"] if r["type"] == "rectanglelabels"]
    brushes = [r for r in item["result"] if r["type"] == "brushlabels"]
    assert len(boxes) == len(found)
    for region, k in zip(boxes, range(len(found))):
        assert_box(region, found.boxes[k].tolist(), float(found.scores[k]), "Apple")
    kept = [k for k in range(len(found)) if found.masks[k].any()]
    assert len(brushes) == len(kept)
    for region, k in zip(brushes, kept):
        assert_brush(region, found.masks[k], float(found.scores[k]), "Apple")
    assert len({r["id"] for r in item["result"]}) == len(item["result"])
    assert predictor.masks.state == "not loaded"

    # A negative example (is_positive false, as the API can send it) is part of the same prompt.
    context = {"result": [smart_box(10, 20, 40, 50), smart_box(0, 0, 10, 10, positive=False)]}
    (item,) = predictor.predict_tasks([task()], FIND_ALL, context=context)
    found = reference.find_like(image(media), example, negatives=[[0.0, 0.0, 6.7, 5.0]], threshold=THRESHOLD,
                                masks=False)
    boxes = [r for r in item["result"] if r["type"] == "rectanglelabels"]
    assert [r["score"] for r in boxes] == pytest.approx([float(s) for s in found.scores], abs=1e-9)

    # A label no answering control has: a message saying where to add it.
    (item,) = predictor.predict_tasks([task()], FIND_ALL, context={"result": [smart_box(10, 20, 40, 50, "Pear")]})
    assert "error" not in item  # Pear is a label of the smart control itself: boxes there
    assert {r["from_name"] for r in item["result"]} <= {"boxes"}


def test_model_smart_one_keeps_the_mask_of_this_one_object(make_predictor, tiny_sam_dir):
    predictor = make_predictor(SAM_MODEL=tiny_sam_dir)
    config = FIND_ALL.replace('smart="true"', 'smart="true" model_smart="one"')
    assert predictor.plan(config, {"result": [smart_box(10, 20, 40, 50)]}).smart  # the SAM path, as before
    assert predictor.masks.state in ("loading", "ready")
    (item,) = predictor.predict_tasks([task()], config, context={"result": [smart_box(10, 20, 40, 50)]})
    assert all(r["type"] == "brushlabels" for r in item["result"]) and len(item["result"]) <= 1


def test_bulk_prelabel_stores_sam3_brush_predictions(make_predictor):
    predictor = make_predictor()
    client = StandInLabelStudio([task(1), task(2)], BRUSH_ONLY)
    summary = prelabel(client, predictor, client.project_id, batch_size=2, progress=False, hostname="http://ls.test")
    assert (summary.predicted, summary.failed, summary.ok) == (2, {}, True)
    expected = predictor.predict_tasks([task(1)], BRUSH_ONLY)[0]
    for task_id in (1, 2):
        (stored,) = client.predictions(task_id)
        assert stored["model_version"] == predictor.model_version(BRUSH_ONLY)
        assert stored["model_version"].startswith("sam3-my-detector-")
        assert [r["value"]["rle"] for r in stored["result"]] == [r["value"]["rle"] for r in expected["result"]]
        assert stored["result"] and all(r["type"] == "brushlabels" for r in stored["result"])


def test_start_training_on_a_sam3_project_learns_thresholds_and_says_it_cannot_fine_tune(
        make_client, checkpoint, tmp_path, monkeypatch):
    """Through the webhook, as Label Studio's Start Training: a finished run, not a refusal; the status row says
    why there is no fine-tuning, and the learned thresholds serve the project."""
    import backend.training.service as service
    from backend.training.job import TrainingJob
    from backend.training.store import ProjectStore
    from backend.training.tasks import ProjectSnapshot
    from detection import DetectorConfig, load_detector
    from tests.backend.training.synthetic import LABEL_CONFIG, labelstudio_tasks, make_shapes_dataset

    ann, _ = make_shapes_dataset(tmp_path / "shapes", num_images=24, size=64, seed=3)
    detector = load_detector(DetectorConfig(model=str(checkpoint), device="cpu"))
    state = tmp_path / "state"
    client = make_client(detector=detector, MODEL=checkpoint, STATE_DIR=state, LABEL_STUDIO_URL="http://ls.invalid",
                         LABEL_STUDIO_API_KEY="key")
    assert client.get("/health").json()["model_class"] == "SAM3"  # Label Studio shows it on the model card
    version = client.post("/setup", json={"project": "7.1", "schema": LABEL_CONFIG}).json()["model_version"]
    assert version.startswith("sam3-my-detector-")
    snapshot = ProjectSnapshot("7", LABEL_CONFIG, tuple(labelstudio_tasks(ann, version)))
    monkeypatch.setattr(service, "fetch_project", lambda client, project_id: snapshot)
    monkeypatch.setattr(TrainingJob, "_fine_tune", lambda *a, **k: pytest.fail("fine-tuning started"))

    start = {"action": "START_TRAINING", "project": {"id": 7, "label_config": LABEL_CONFIG}}
    assert client.post("/webhook", json=start).status_code == 200
    (row,) = wait_until(lambda: [j for j in client.get("/status").json()["jobs"] if j.get("kind") == "training"],
                        "the training run to end", 120, holds=all_ended)
    assert row["state"] == "done", row
    assert row["message"].startswith(f"SAM 3 cannot be fine-tuned by this backend (model {checkpoint}): thresholds "
                                     "only; thresholds learned for 3 of 3 labels (red_square, GreenDisk, blue triangle)")
    assert ProjectStore(state).load_thresholds(7).learned_labels
    # The project is served with its learned thresholds now: another version.
    assert row["model_version"] != version
