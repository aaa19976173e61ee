"""`python -m evaluation.coco download` against a local HTTP server (127.0.0.1) serving small zips."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from tests.evaluation.coco.command_line import load_json
from tests.evaluation.coco.drawn_dataset import make_dataset
from evaluation.coco.cli import main
from evaluation.coco.dataset import load_dataset
from tests.http_server import LocalServer


class RangeFiles:
    """Serves `files` (path -> bytes) as routes of a local server, with Range support; can cut a response
    short or ignore Range."""

    def __init__(self, server: LocalServer, files: dict[str, bytes]):
        self.server, self.url, self.files = server, server.url, files
        self.cut: dict[str, int] = {}  # path -> bytes of its next response before dropping the connection
        self.honour_range = True
        for path in files:
            server.routes[path] = self.answer

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        """(path, Range header) of each request, in order."""
        return [(r["path"], r["headers"].get("Range")) for r in self.server.requests]

    def answer(self, request: dict) -> tuple[int, dict, bytes]:
        path, data = request["path"], self.files[request["path"]]
        start, status, headers = 0, 200, {}
        rng = request["headers"].get("Range")
        if rng and self.honour_range:
            start, status = int(rng.split("=")[1].split("-")[0]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        if path in self.cut:  # announced in full, sent in part: the connection closes after it (HTTP/1.0)
            body = body[: self.cut.pop(path)]
        return status, headers, body


def zip_bytes(tmp, name, members):
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        for arcname, src in members:
            z.write(src, arcname)
    return path.read_bytes()


@pytest.fixture
def coco_server(tmp_path, http_server):
    ann, images = make_dataset(tmp_path / "src", num_images=2)
    val = zip_bytes(tmp_path, "val2017.zip", [(f"val2017/{p.name}", p) for p in sorted(images.iterdir())])
    # A bigger annotation zip (stored, not deflated) so that a cut-off response leaves a partial file.
    padded = json.loads(ann.read_text())
    padded["info"] = {"description": "x" * 200_000}
    (tmp_path / "instances_val2017.json").write_text(json.dumps(padded))
    anns = zip_bytes(tmp_path, "ann.zip", [("annotations/instances_val2017.json", tmp_path / "instances_val2017.json")])
    files = {"/zips/val2017.zip": val, "/annotations/annotations_trainval2017.zip": anns}
    server = RangeFiles(http_server, files)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"path": p.lstrip("/"), "size": len(d), "md5": hashlib.md5(d).hexdigest()}
                                    for p, d in files.items()]))
    return server, manifest


@pytest.mark.slow
def test_download_resume_extract_then_evaluate(coco_server, tmp_path, fast_model_dir):
    server, manifest = coco_server
    root = tmp_path / "coco"
    server.cut["/zips/val2017.zip"] = 1000  # the first response is cut off after 1000 bytes
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest)]) == 2
    assert (root / "downloads" / "val2017.zip.part").stat().st_size == 1000
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest)]) == 0
    assert ("/zips/val2017.zip", "bytes=1000-") in server.requests  # resumed, not restarted
    ds = load_dataset(root / "annotations" / "instances_val2017.json", root / "val2017")
    assert len(ds.image_ids) == 2
    # The second of the two README commands: evaluate straight from --coco-root.
    out = tmp_path / "run"
    assert main(["--coco-root", str(root), "--model", str(fast_model_dir), "--device", "cpu", "--out", str(out)]) == 0
    assert load_json(out / "metrics.json")["config"]["num_images"] == 2
    # A third run has nothing to do: files verified, not fetched again.
    n = len(server.requests)
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest)]) == 0
    assert len(server.requests) == n
    # Nor after --delete-zips: the extracted archives are not downloaded again to be thrown away.
    (root / "downloads" / "val2017.zip").unlink()
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest),
                 "--delete-zips"]) == 0
    assert len(server.requests) == n


def test_server_ignoring_range_restarts_cleanly(coco_server, tmp_path):
    server, manifest = coco_server
    root = tmp_path / "coco"
    server.cut["/annotations/annotations_trainval2017.zip"] = 50_000
    server.honour_range = False
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest)]) == 2
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest)]) == 0
    name = "/annotations/annotations_trainval2017.zip"
    assert (name, "bytes=50000-") in server.requests  # asked to resume, got the whole file again
    assert (root / "downloads" / "annotations_trainval2017.zip").read_bytes() == server.files[name]
    assert (root / "annotations" / "instances_val2017.json").is_file()


def test_checksum_mismatch_is_an_error_and_the_file_is_dropped(coco_server, tmp_path, capsys):
    server, manifest = coco_server
    items = json.loads(manifest.read_text())
    items[0]["md5"] = "0" * 32
    manifest.write_text(json.dumps(items))
    root = tmp_path / "coco"
    capsys.readouterr()
    assert main(["download", "--coco-root", str(root), "--base-url", server.url, "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "MD5 mismatch" in err
    assert not (root / "downloads" / "val2017.zip.part").exists() and not (root / "val2017").exists()


def test_unreachable_host_is_one_line(tmp_path, capsys):
    capsys.readouterr()
    assert main(["download", "--coco-root", str(tmp_path), "--base-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
