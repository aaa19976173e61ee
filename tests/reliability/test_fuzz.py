"""Fuzzing the running server (`python -m backend`, real uvicorn HTTP parsing): schemathesis from its
OpenAPI spec, and hypothesis payloads shaped like Label Studio's but hostile, for /predict and /setup.

No answer may be a 5xx or carry a stack trace, and the server must stay up; the number of cases run is
printed. (tests/backend fuzzes the app in-process through ASGI; this is the real server over HTTP.)
"""
from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backend.http_checks import basic, no_trace
from tests.backend.processes import BackendProcess
from tests.image_bytes import jpeg_bytes
from tests.reliability.predict_batches import CONFIG
from tests.reliability.hostile_inputs import ESCAPES, SSRF_URLS, hostile_configs

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
COUNTS: dict[str, int] = {}
USER, PASSWORD = "labeler", "fuzz-s3cret"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-media")
    (root / "a.jpg").write_bytes(jpeg_bytes())
    env = {"GROUNDING_DINO_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "LOCAL_FILES_DOCUMENT_ROOT": str(root), "DOWNLOAD_TIMEOUT": "1", "BATCH_SIZE": "2",
           "BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD}
    proc = BackendProcess(env, tmp_path_factory.mktemp("fuzz-log") / "backend.log")
    try:
        proc.wait_ready(headers=_auth())
        yield proc
    finally:
        proc.stop()
        print("\nfuzz cases run: " + json.dumps(COUNTS))


def _auth() -> dict:
    return basic(USER, PASSWORD)


def check(response, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    no_trace(response.text, what)
    if response.status_code >= 400:
        assert "detail" in response.json(), (what, response.text[:300])


def count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


def test_schemathesis_openapi_against_the_running_server(server):
    import schemathesis

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=_auth())
    operations = [("/predict", "POST"), ("/setup", "POST"), ("/webhook", "POST"), ("/health", "GET"),
                  ("/", "GET"), ("/versions", "GET")]
    for path, method in operations:
        strategy = schema[path][method].as_strategy()

        @settings(max_examples=80 if method == "POST" else 10, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            response = case.call(base_url=server.url, headers=_auth(), timeout=30)
            count(f"schemathesis {method} {path}")
            check(response, f"{method} {path} {case.body!r:.300}")

        run()
        assert server.alive(), server.log()
    assert httpx.get(server.url + "/health", headers=_auth(), timeout=5).status_code == 200


# ----- hypothesis: Label Studio-shaped, hostile payloads ----------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)
urls = st.one_of(
    st.sampled_from(SSRF_URLS).map(lambda u: u.replace("{port}", "1")),
    st.sampled_from(ESCAPES).map(lambda d: f"/data/local-files/?d={d}"),
    st.sampled_from(["/data/local-files/?d=a.jpg", "/data/upload/1/x.jpg", "s3://b/k.jpg", "gs://b/k.jpg",
                     "azure-blob://c/k.jpg", "upload/1/x.jpg", "http://[::1", "http://h:99999/x", "http://",
                     "https://exa mple.com/x.jpg", "\x00", "//127.0.0.1/x", "http://a.b/" + "x" * 5000]),
    st.text(max_size=60),
    json_value,
)
label_word = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"<&'), min_size=0, max_size=20)
generated_config = st.lists(label_word, min_size=0, max_size=6).map(
    lambda labels: '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{v}"/>' for v in labels) + '</RectangleLabels>'
    '<TextArea name="prompt" toName="image"/></View>')
configs = st.one_of(st.just(CONFIG), generated_config, st.sampled_from([x for x, _ in hostile_configs(1).values()]),
                    st.text(max_size=200), json_value)
typed_text = st.one_of(st.text(max_size=40), st.sampled_from(["cat", "Cat -> RC", "->", " -> ", "., ;", "kitten;;\n",
                                                              "zebra", "red car -> Nope", "..."]))
contexts = st.one_of(
    st.none(), st.just({}), json_value,
    st.builds(lambda texts, name, kind: {"result": [{"from_name": name, "to_name": "image", "type": kind,
                                                     "value": {"text": texts}}]},
              st.one_of(st.lists(typed_text, max_size=3), typed_text, json_value),
              st.sampled_from(["prompt", "label", "other"]), st.sampled_from(["textarea", "TextArea", "rectanglelabels"])),
)
tasks = st.lists(
    st.one_of(
        st.builds(lambda i, u, extra: {"id": i, "data": {"image": u, **extra}},
                  json_leaf, urls, st.dictionaries(st.text(max_size=5), json_value, max_size=2)),
        json_value,
    ),
    max_size=5,
)
predict_bodies = st.fixed_dictionaries(
    {"tasks": tasks},
    optional={"label_config": configs, "project": json_value, "params": st.one_of(
        st.none(), json_value, st.fixed_dictionaries({"login": json_value, "password": json_value, "context": contexts}))},
)
setup_bodies = st.fixed_dictionaries(
    {},
    optional={"schema": configs, "project": json_value, "hostname": st.one_of(urls, json_value),
              "access_token": json_value, "extra_params": json_value, "model_version": json_value},
)


def test_hypothesis_payloads_for_predict_and_setup(server):
    with httpx.Client(base_url=server.url, headers=_auth(), timeout=30) as http:

        @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(body=setup_bodies, then_predict=predict_bodies)
        def run(body, then_predict):
            response = http.post("/setup", json=body)
            count("hypothesis /setup")
            check(response, f"/setup {body!r:.300}")
            if "project" in body:
                then_predict = {**then_predict, "project": body["project"]}
            response = http.post("/predict", json=then_predict)
            count("hypothesis /predict")
            check(response, f"/predict {then_predict!r:.300}")
            if response.status_code == 200:
                results = response.json()["results"]
                assert isinstance(results, list) and len(results) == len(then_predict["tasks"]), response.text[:300]
                for item in results:
                    assert ("result" in item) != ("error" in item), item

        run()

        @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(raw=st.one_of(st.binary(max_size=300), json_value.map(lambda v: json.dumps(v).encode())),
               content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                             "multipart/form-data; boundary=x", "", "application/json; charset=utf-16"]),
               path=st.sampled_from(["/predict", "/setup", "/webhook"]))
        def raw_bodies(raw, content_type, path):
            response = http.post(path, content=raw, headers={"Content-Type": content_type})
            count("hypothesis raw bodies")
            check(response, f"{path} {content_type} {raw!r:.200}")

        raw_bodies()

        for deep in (b"[" * 100_000, b'{"tasks": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"tasks": [' + b"1," * 200_000 + b"1]}"):
            for path in ("/predict", "/setup"):
                response = http.post(path, content=deep, headers={"Content-Type": "application/json"})
                count("deep/large JSON")
                check(response, f"{path} deep JSON")
    assert server.alive(), server.log()
    assert httpx.get(server.url + "/health", headers=_auth(), timeout=5).status_code == 200
