"""Record the exports of a real Label Studio 1.23.2 as test fixtures (run by hand, rarely):

    PYTHONPATH=$PWD .venv/bin/python -m tests.e2e.record_exports [OUT_DIR]

starts Label Studio (tests/e2e/ls_harness.py), builds the project of tests/e2e/export_project.py and writes
what each export of it downloads, byte for byte, to OUT_DIR (default
tests/fixtures/label-studio-1.23.2-exports/): the Export button's JSON (prediction ids), JSON_MIN, CSV,
TSV, COCO and YOLO, and a snapshot export with full predictions. No images: the exports hold only URLs.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

from tests.e2e.export_project import build_project, button_export, snapshot_export
from tests.e2e.ls_harness import ROOT, start_label_studio, stop

OUT = ROOT / "tests" / "fixtures" / "label-studio-1.23.2-exports"
BUTTON_FORMATS = {"JSON": "export-json.json", "JSON_MIN": "export-json-min.json", "CSV": "export.csv",
                  "TSV": "export.tsv", "COCO": "export-coco", "YOLO": "export-yolo"}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="record-exports-") as tmp:
        server = start_label_studio(Path(tmp))
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"},
                              timeout=120) as api:
                project = build_project(api)["project"]
                for export_type, name in BUTTON_FORMATS.items():
                    write(out / name, button_export(api, project, export_type))
                write(out / "snapshot-full-predictions.json", snapshot_export(api, project))
        finally:
            stop(server.proc)
    return 0


def write(path: Path, content: bytes) -> None:
    if path.suffix == "" and content[:2] == b"PK":  # a zip archive (COCO/YOLO with their folders)
        path = path.with_suffix(".zip")
    elif path.suffix == "":
        path = path.with_suffix(".json")
    path.write_bytes(content)
    print(f"{path} ({len(content):,} bytes)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
