"""The /predict batches of the reliability suite and the checks on their answers: label configs, tasks,
a bad task sandwiched between good ones, and "the good tasks' results did not change"."""
from __future__ import annotations

from tests.label_studio_requests import ls_body

CONFIG = ls_body("setup")["schema"]


def config(body: str, images: str = '<Image name="image" value="$image"/>') -> str:
    return f"<View>{images}{body}</View>"


def rect_config(*labels: str, attrs: str = "") -> str:
    inner = "".join(f'<Label value="{v}"/>' for v in labels)
    return config(f'<RectangleLabels name="label" toName="image"{attrs}>{inner}</RectangleLabels>')


def local_task(task_id, name: str) -> dict:
    return {"id": task_id, "data": {"image": f"/data/local-files/?d={name}"}}


def url_task(task_id, url: str) -> dict:
    return {"id": task_id, "data": {"image": url}}


def predict(client, tasks, label_config=CONFIG, **extra):
    response = client.post("/predict", json={"tasks": tasks, "label_config": label_config, **extra})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(tasks), "exactly one item per task"
    return results


def sandwich(bad_tasks: list[dict], good: dict) -> list[dict]:
    """good, bad1, good, bad2, ..., good: a good task before and after every bad one (unique ids)."""
    tasks, n = [dict(good, id=1000)], 1001
    for bad in bad_tasks:
        tasks.append(bad)
        tasks.append(dict(good, id=n))
        n += 1
    return tasks


def strip_ids(item: dict) -> dict:
    """A result item without the region ids (they hash the task id): what must not change."""
    if "result" not in item:
        return item
    return {**item, "result": [{k: v for k, v in r.items() if k != "id"} for r in item["result"]]}


def same_result(got: dict, want: dict, tol: float = 1e-3) -> bool:
    """Same regions (labels, sizes; boxes and scores up to float noise of a different batch split)."""
    if ("result" in got) != ("result" in want) or len(got.get("result", [])) != len(want.get("result", [])):
        return False
    for a, b in zip(got.get("result", []), want.get("result", [])):
        if (a["from_name"], a["to_name"], a["type"], a["original_width"], a["original_height"],
                a["value"].get("rectanglelabels")) != (b["from_name"], b["to_name"], b["type"], b["original_width"],
                                                       b["original_height"], b["value"].get("rectanglelabels")):
            return False
        if abs(a["score"] - b["score"]) > tol:
            return False
        if any(abs(a["value"][k] - b["value"][k]) > 100 * tol for k in ("x", "y", "width", "height")):
            return False
    return True


def assert_good_unaffected(results: list[dict], reference: dict) -> None:
    """Every even position of a sandwich holds the good task's reference result."""
    assert reference.get("result"), "the reference task should have boxes"
    for i in range(0, len(results), 2):
        assert "error" not in results[i], (i, results[i])
        assert same_result(results[i], reference), f"good task at position {i} changed: {results[i]}"
