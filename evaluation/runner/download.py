"""Resumable, checksummed downloads and safe zip extraction (dataset-agnostic).

Each file is fetched into DEST.part; an interrupted download continues with an HTTP Range request (a
server that ignores Range restarts it); the finished file's size and MD5 are checked (where known)
before it is renamed into place, so a file that exists is complete. Archives are extracted once
(a marker file records it). The dataset packages list what to fetch (evaluation.coco.download,
evaluation.lvis.download).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from runtime.errors import InputError


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the base URL
    size: int | None  # bytes; None: not checked
    md5: str | None  # None: not checked


CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, expected: RemoteFile, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `dest` (resuming DEST.part), check size and MD5; returns `dest`."""
    if dest.is_file() and _ok(dest, expected) is None:
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if expected.size is not None and have > expected.size:
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and expected.size is not None and have == expected.size:  # already complete
            response = None
        else:
            raise InputError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise InputError(f"download of {url} failed: {getattr(exc, 'reason', exc)}") from None
    if response is not None:
        with response:
            if have and response.status != 206:  # the server ignored Range: start over
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else expected.size
            with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                disable=not progress, file=sys.stderr,
            ) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
                except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                    raise InputError(f"download of {url} interrupted ({exc}); run the command again to resume") from None
    problem = _ok(part, expected)
    if problem:
        if "MD5" in problem:
            part.unlink()  # complete but wrong: a resume cannot fix it
            problem += "; the file was removed, run the command again to download it afresh"
        else:
            problem += "; run the command again to resume"
        raise InputError(f"{url}: {problem}")
    part.replace(dest)
    return dest


def _ok(path: Path, expected: RemoteFile) -> str | None:
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"size mismatch: expected {expected.size} bytes, got {size}"
    if expected.md5 is not None:
        got = md5_of(path)
        if got != expected.md5:
            return f"MD5 mismatch: expected {expected.md5}, got {got}"
    return None


def extracted_marker(root: Path, archive_name: str) -> Path:
    return root / f".extracted-{archive_name}"


def extract(archive: Path, root: Path) -> None:
    marker = extracted_marker(root, archive.name)
    if marker.exists():
        return
    try:
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                target = (root / name).resolve()
                if not target.is_relative_to(root.resolve()):
                    raise InputError(f"{archive}: refusing to extract {name!r} outside {root}")
            z.extractall(root)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive} is not a valid zip file ({exc})") from None
    marker.write_text("ok\n")


def download(root: Path, base_url: str, files, keep_zips: bool = True, progress: bool = True) -> None:
    """Fetch each of `files` (RemoteFile, relative to `base_url`) into ROOT/downloads and extract zips into ROOT."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for spec in files:
        name = Path(spec.path).name
        if name.endswith(".zip") and extracted_marker(root, name).exists():
            continue  # verified and extracted before: no re-download (gone with --delete-zips) or re-hash
        url = base_url.rstrip("/") + "/" + spec.path.lstrip("/")
        archive = fetch(url, root / "downloads" / name, spec, progress=progress)
        if archive.suffix == ".zip":
            extract(archive, root)
            if not keep_zips:
                archive.unlink()


def load_manifest(path: str) -> tuple[RemoteFile, ...]:
    try:
        items = json.loads(Path(path).read_text())
        return tuple(RemoteFile(str(i["path"]), i.get("size"), i.get("md5")) for i in items)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--manifest {path}: expected a JSON list of {{path, size, md5}} ({exc})") from None
