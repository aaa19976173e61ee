"""Hostile input through the HTTP API: SSRF, local-file escapes, Basic auth, hostile label configs.

The media and label-config units are tested in tests/backend; here every attack goes through `/predict`
(or `/setup`) of the real app, sandwiched between good tasks that must come back unchanged.
"""
from __future__ import annotations

import ast
import base64
import hmac
import inspect
import os
import socket
import textwrap

import pytest

from tests.backend.http_checks import basic
from tests.http_server import LocalServer
from tests.reliability.hostile_inputs import ESCAPES, HOSTILE_DATA_URIS, SSRF_URLS, hostile_configs
from tests.backend.http_checks import no_trace
from tests.image_bytes import jpeg_bytes
from tests.reliability.predict_batches import (
    CONFIG, assert_good_unaffected, config, local_task, predict, rect_config, sandwich, url_task,
)

pytestmark = pytest.mark.reliability
IMAGE = jpeg_bytes()


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.jpg").write_bytes(IMAGE)
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes((64, 48), (0, 255, 0)))
    os.symlink(tmp_path, root / "up")  # a symlink out of the root
    return root


@pytest.fixture
def reference(make_client, media_root):
    (item,) = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root), [local_task(1, "a.jpg")])
    return item


# ----- SSRF ----------------------------------------------------------------------------------------




def test_ssrf_urls_are_refused_per_task_and_good_tasks_unaffected(make_client, http_server, media_root, reference):
    http_server.file("/x.jpg", IMAGE)
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    bad = [url_task(i, u.format(port=http_server.port)) for i, u in enumerate(SSRF_URLS)]
    results = predict(client, sandwich(bad, local_task(0, "a.jpg")))
    assert_good_unaffected(results, reference)
    for task, item in zip(bad, results[1::2]):
        url = task["data"]["image"]
        assert "result" not in item, url
        assert any(w in item["error"] for w in ("refused", "unsupported", "cannot resolve")), (url, item["error"])
        if url.startswith("http://") and "refused" in item["error"]:
            assert "ALLOWED_MEDIA_HOSTS" in item["error"], item["error"]  # says how to allow it
    assert http_server.requests == [], "no refused URL may reach the internal server"
    print(f"\nSSRF: {len(bad)} URLs refused, {len(bad) + 1} good tasks unchanged")


def test_data_uris_are_decoded_and_hostile_ones_fail_per_task(make_client, media_root, reference):
    """A data: URI of the good image predicts exactly as the file; broken or oversized ones fail alone."""
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, MAX_DOWNLOAD_BYTES=1_000_000)
    (item,) = predict(client, [url_task(1, "data:image/jpeg;base64," + base64.b64encode(IMAGE).decode())])
    assert_good_unaffected([item], reference)
    bad = [url_task(i, uri) for i, (uri, _) in enumerate(HOSTILE_DATA_URIS.values())]
    results = predict(client, sandwich(bad, local_task(0, "a.jpg")))
    assert_good_unaffected(results, reference)
    for (name, (uri, words)), item in zip(HOSTILE_DATA_URIS.items(), results[1::2]):
        assert "result" not in item and words in item["error"], (name, item["error"])
        assert len(item["error"]) < 400, (name, item["error"])
        assert len(uri) < 80 or uri[40:80] not in item["error"], (name, item["error"])  # no payload echoed
        no_trace(item["error"])


def test_internal_host_is_fetched_only_when_allowed_by_configuration(make_client, http_server, media_root, reference):
    http_server.file("/x.jpg", IMAGE)
    url = f"http://127.0.0.1:{http_server.port}/x.jpg"
    (item,) = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root), [url_task(1, url)])
    assert "refused" in item["error"] and http_server.requests == []
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, ALLOWED_MEDIA_HOSTS=f"127.0.0.1:{http_server.port}")
    (item,) = predict(client, [url_task(1, url)])
    assert "error" not in item and len(http_server.requests) == 1
    assert_good_unaffected([item], reference)


@pytest.fixture
def public_host(monkeypatch):
    """`images.example.com` resolves to 127.0.0.1 (a public-looking name, faked for the test)."""
    import labelstudio.destinations

    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        return real("127.0.0.1" if host == "images.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(labelstudio.destinations.socket, "getaddrinfo", fake)
    return "images.example.com"


def test_allowed_host_redirecting_to_a_private_address_is_refused(make_client, http_server, media_root, reference,
                                                                  public_host):
    private = LocalServer()  # the internal service the redirect aims at
    try:
        private.file("/x.jpg", IMAGE)
        targets = [f"http://127.0.0.1:{private.port}/x.jpg", f"http://localhost:{private.port}/x.jpg",
                   f"http://2130706433:{private.port}/x.jpg", f"http://[::1]:{private.port}/x.jpg",
                   "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", f"gopher://127.0.0.1:{private.port}/"]
        for i, target in enumerate(targets):
            http_server.routes[f"/r{i}.jpg"] = lambda req, t=target: (302, {"Location": t}, b"")
        http_server.routes["/chain.jpg"] = lambda req: (301, {"Location": "/r0.jpg"}, b"")  # two hops
        http_server.file("/ok.jpg", IMAGE)
        http_server.routes["/to-ok.jpg"] = lambda req: (307, {"Location": "/ok.jpg"}, b"")
        client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root,
                             ALLOWED_MEDIA_HOSTS=f"{public_host}:{http_server.port}")
        base = f"http://{public_host}:{http_server.port}"
        bad = [url_task(i, f"{base}/r{i}.jpg") for i in range(len(targets))] + [url_task(99, f"{base}/chain.jpg")]
        results = predict(client, sandwich(bad, url_task(0, f"{base}/to-ok.jpg")))
        assert_good_unaffected(results, reference)  # the allowed host itself works, redirects within it too
        for item in results[1::2]:
            assert "result" not in item and ("refused" in item["error"] or "only http" in item["error"]), item
        assert private.requests == [], "the redirect reached the private address"
        assert all(r["headers"]["Host"] == f"{public_host}:{http_server.port}" for r in http_server.requests)
    finally:
        private.close()


# ----- Local Storage escapes -------------------------------------------------------------------------




def test_local_files_outside_the_root_are_refused(make_client, media_root, reference, tmp_path):
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    outside = tmp_path / "outside.jpg"
    bad = [local_task(i, d) for i, d in enumerate(ESCAPES)]
    bad += [local_task(50, str(outside)), local_task(51, "/etc/passwd"), local_task(52, "/etc/hostname"),
            local_task(53, "~/.bashrc"), local_task(54, "")]
    results = predict(client, sandwich(bad, local_task(0, "a.jpg")))
    assert_good_unaffected(results, reference)
    for task, item in zip(bad, results[1::2]):
        assert "result" not in item, (task, item)
        assert any(w in item["error"] for w in ("LOCAL_FILES_DOCUMENT_ROOT", "no file path", "LABEL_STUDIO_URL")), (
            task, item["error"])
    print(f"\nlocal files: {len(bad)} escapes refused")


# ----- Basic auth --------------------------------------------------------------------------------------

AUTH_CASES = {
    "missing": {},
    "wrong user": basic("intruder", "s3cr3t"),
    "wrong password": basic("labeler", "guess"),
    "both wrong": basic("x", "y"),
    "password prefix": basic("labeler", "s3cr3"),
    "password longer": basic("labeler", "s3cr3t!"),
    "user with colon": basic("labeler:s3cr3t", ""),
    "empty": basic("", ""),
    "not base64": {"Authorization": "Basic %%%"},
    "bearer": {"Authorization": "Bearer s3cr3t"},
    "no scheme": {"Authorization": base64.b64encode(b"labeler:s3cr3t").decode()},
    "non-utf8": {"Authorization": "Basic " + base64.b64encode(b"labeler:\xff\xfe").decode()},
}


def test_auth_refuses_wrong_and_missing_credentials_without_a_trace(make_client):
    client = make_client(BASIC_AUTH_USER="labeler", BASIC_AUTH_PASS="s3cr3t")
    for name, headers in AUTH_CASES.items():
        for method, path, body in [("GET", "/health", None), ("POST", "/setup", {"schema": CONFIG}),
                                   ("POST", "/predict", {"tasks": [], "label_config": CONFIG}),
                                   ("GET", "/versions", None)]:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (name, path, response.status_code)
            assert response.headers["WWW-Authenticate"].startswith("Basic"), name
            assert "s3cr3t" not in response.text
            no_trace(response.text)
    assert client.get("/health", headers=basic("labeler", "s3cr3t")).status_code == 200


def test_auth_compares_both_fields_in_constant_time(make_client, monkeypatch):
    """Both user and password go through secrets.compare_digest on every request, even when the user is
    already wrong (no early exit that tells which field was wrong), and no `==` touches a credential."""
    import secrets

    import backend.app.auth

    assert backend.app.auth.secrets is secrets
    calls = []

    def recording(a, b):
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(secrets, "compare_digest", recording)
    client = make_client(BASIC_AUTH_USER="labeler", BASIC_AUTH_PASS="s3cr3t")
    for headers, ok in [(basic("intruder", "s3cr3t"), False), (basic("labeler", "nope"), False), ({}, False),
                        (basic("labeler", "s3cr3t"), True)]:
        calls.clear()
        assert (client.get("/health", headers=headers).status_code == 200) is ok
        compared = {b for _, b in calls}
        assert {b"labeler", b"s3cr3t"} <= compared, f"both fields must be compared with compare_digest: {calls}"

    # And in the source: the credentials are never compared with ==/!= or `in`.
    source = textwrap.dedent(inspect.getsource(backend.app.auth.install_basic_auth))
    tree = ast.parse(source)
    secret_names = {"user", "password", "given_user", "given_pass"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & secret_names, f"non-constant-time comparison: {ast.unparse(node)}"
    assert source.count("compare_digest(") >= 2


# ----- label configs ----------------------------------------------------------------------------------







HOSTILE = hostile_configs(0)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_label_config_gets_a_clear_422_on_setup_and_predict(make_client, http_server, media_root, name):
    """/setup must refuse what /predict will refuse: Label Studio shows /setup's error when connecting,
    while a refused /predict only leaves tasks silently without predictions."""
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    xml, message = hostile_configs(http_server.port)[name]
    setup = client.post("/setup", json={"project": "1.1", "schema": xml})
    pred = client.post("/predict", json={"tasks": [local_task(1, "a.jpg")], "label_config": xml})
    for route, response in (("/setup", setup), ("/predict", pred)):
        assert response.status_code == 422, (route, response.status_code, response.text[:300])
        detail = response.json()["detail"]
        assert message in detail, (route, detail)
        assert "lollol" not in detail, "an entity was expanded"
        no_trace(response.text)
    assert http_server.requests == [], "an external entity/DTD was fetched"
    assert client.get("/health").status_code == 200


def test_unicode_and_escaped_labels_come_back_exactly(make_client, media_root):
    labels = ["猫", "Ñandú", "🚗 car", "سيارة", "Straße", "a<b>&\"c\"", "x" * 200]
    inner = "".join(f'<Label value="{v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(chr(34), "&quot;")}"/>'
                    for v in labels)
    xml = config(f'<RectangleLabels name="label" toName="image" model_score_threshold="0">{inner}</RectangleLabels>')
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    setup = client.post("/setup", json={"project": "2.1", "schema": xml})
    assert setup.status_code == 200, setup.text
    (item,) = predict(client, [local_task(1, "a.jpg")], label_config=xml)
    assert item["model_version"] == setup.json()["model_version"]
    emitted = {r["value"]["rectanglelabels"][0] for r in item["result"]}
    assert item["result"] and emitted <= set(labels), emitted - set(labels)


def test_label_set_over_256_tokens_is_chunked_correctly(make_client, tiny_detector, media_root):
    """300 labels (~1,500 tokens): several prompts, each within 256 tokens, every label in exactly one,
    in order; /predict answers with labels of the config only, from more than the first chunk."""
    from labelstudio.label_config import parse_label_config

    labels = [f"Thing{i} number {i} widget" for i in range(300)]
    xml = config('<RectangleLabels name="label" toName="image" model_score_threshold="0">'
                 + "".join(f'<Label value="{v}"/>' for v in labels) + "</RectangleLabels>")
    (label_set,) = parse_label_config(xml).label_sets
    prompt = tiny_detector.prompt(label_set.prompt_classes)
    assert len(prompt.chunks) >= 5
    covered = []
    for chunk in prompt.chunks:
        assert chunk.num_tokens <= 256
        assert chunk.class_offset == len(covered)
        covered.extend(range(chunk.class_offset, chunk.class_offset + chunk.num_classes))
        words = chunk.caption.text
        for k in range(chunk.class_offset, chunk.class_offset + chunk.num_classes):
            assert f"thing{k} number {k} widget ." in words
    assert covered == list(range(300))
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    (item,) = predict(client, [local_task(1, "a.jpg")], label_config=xml)
    emitted = [r["value"]["rectanglelabels"][0] for r in item["result"]]
    assert emitted and set(emitted) <= set(labels)
    first_chunk = set(labels[: prompt.chunks[0].num_classes])
    assert set(emitted) - first_chunk, "no label of a later chunk was ever predicted"
    print(f"\n300 labels -> {len(prompt.chunks)} prompts of {[c.num_tokens for c in prompt.chunks]} tokens")


def test_config_without_image_tasks_data_key_fails_per_task(make_client, media_root):
    """A config whose <Image value="$photo"> key is missing in a task: that task fails, not the request."""
    xml = rect_config("Cat").replace('value="$image"', 'value="$photo"')
    tasks = [{"id": 1, "data": {"photo": "/data/local-files/?d=a.jpg"}}, {"id": 2, "data": {"image": "x"}},
             {"id": 3, "data": {"photo": "/data/local-files/?d=a.jpg"}}]
    results = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root), tasks, label_config=xml)
    assert ["result" in r for r in results] == [True, False, True]
    assert "data.photo" in results[1]["error"]
