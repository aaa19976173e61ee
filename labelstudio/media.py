"""Task media URLs -> image bytes, with size/time limits, every request through the SSRF guard (`destinations`).

URL kinds (as Label Studio stores them in `task.data`):
- `/data/upload/<pid>/<file>` (falls back to `/storage-data/uploaded/?filepath=upload/...`),
  `/data/local-files/?d=<path>` (read from LOCAL_FILES_DOCUMENT_ROOT when set, else through Label Studio),
  any other Label Studio path: fetched from the Label Studio host with the API key;
- `s3://`, `gs://`, `azure-blob://`: through Label Studio's presign endpoint for the task;
- plain `http(s)://` URLs;
- `data:image/...;base64,...` URIs (Label Studio displays them), decoded under the same byte limit.

We use label-studio-sdk's helpers for what they do well (URL classification, presign encoding, path
joining under a root, JWT detection, and `LabelStudio`'s refresh of personal access tokens), but not
its `get_local_path` downloader: it has no size limit, no timeout, follows redirects to any address,
keeps a disk cache and reads its settings from the process environment.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import posixpath
import threading
import time
from urllib.parse import parse_qs, unquote_to_bytes, urljoin, urlparse

import httpx
from label_studio_sdk import LabelStudio  # imported with the module: a first refresh inside /setup's 3 s stays quick
from label_studio_sdk._extensions.label_studio_tools.core.utils.io import (
    concat_urls,
    encode_presign_fileuri,
    is_cloud_storage_uri,
    is_jwt_well_formed,
)

from PIL import Image

from detection.images import ImageError, open_image
from labelstudio.api_errors import error_text, is_connection_error
from labelstudio.destinations import check_destination
from labelstudio.media_errors import KeyRefusedError, LabelStudioUnreachableError, MediaError
from labelstudio.media_settings import MediaSettings
from labelstudio.urls import short_url
from labelstudio.target import LabelStudioTarget

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5


def source_name(url: str) -> str:
    """The subject of a sentence about a task's image: `the file at <url>`, `the image of a data: URI (...)`."""
    return f"the image of {short_url(url)}" if url[:5].lower() == "data:" else f"the file at {short_url(url)}"


class MediaFetcher:
    """Thread-safe: one instance serves every request of the process."""

    def __init__(self, settings: MediaSettings, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.client = httpx.Client(
            follow_redirects=False,
            timeout=settings.download_timeout,
            transport=transport,
            headers={"User-Agent": "grounding-dino-ml-backend"},
        )
        self._ls_clients: dict = {}
        self._lock = threading.Lock()

    # ----- public -----------------------------------------------------------------------------

    def label_studio_target(self, hostname: str | None = None, access_token: str | None = None) -> LabelStudioTarget:
        """LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY when set, else what the project sent in /setup."""
        return LabelStudioTarget.from_setup(hostname, access_token).under(self.settings.label_studio_url,
                                                                           self.settings.label_studio_api_key)

    def fetch_image(self, url, task_id=None, hostname: str | None = None, access_token: str | None = None) -> Image.Image:
        """`fetch` and decode within MAX_IMAGE_PIXELS; every failure a MediaError naming the URL."""
        data = self.fetch(url, task_id=task_id, hostname=hostname, access_token=access_token)
        try:
            return open_image(data, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            raise MediaError(exc.about(source_name(url.strip()))) from None

    def fetch(self, url, task_id=None, hostname: str | None = None, access_token: str | None = None) -> bytes:
        if not isinstance(url, str) or not url.strip():
            raise MediaError("the task has no image URL in its data")
        url = url.strip()
        if url[:5].lower() == "data:":
            return self._decode_data_uri(url)
        target = self.label_studio_target(hostname, access_token)
        host = target.url
        if url.startswith("upload/") or url.startswith("/upload/"):
            url = "/data/" + url.lstrip("/")
        parsed = urlparse(url)

        if url.startswith("/data/") and "d" in parse_qs(parsed.query) and self.settings.local_files_document_root:
            path = self.local_file_path(url)
            if os.path.isfile(path):
                return self._read_file(path)
            if not host:
                raise MediaError(
                    f"Local Storage file {parse_qs(parsed.query)['d'][-1]!r} is not under "
                    f"LOCAL_FILES_DOCUMENT_ROOT ({self.settings.local_files_document_root}): point it at the "
                    "directory Label Studio's LOCAL_FILES_DOCUMENT_ROOT names, or set LABEL_STUDIO_URL to fetch "
                    "the file through Label Studio"
                )
        if is_cloud_storage_uri(url):
            if task_id is None:
                raise MediaError(f"cloud storage URL {short_url(url)} needs the task id to be presigned by Label Studio")
            base = self._require_ls(target, url)
            presign = concat_urls(base, f"/tasks/{task_id}/presign/?fileuri={encode_presign_fileuri(url)}")
            return self._download(presign, target)
        if url.startswith("/"):
            base = self._require_ls(target, url)
            try:
                return self._download(concat_urls(base, url), target)
            except _NotFound:
                if url.startswith("/data/upload/"):
                    proxy = concat_urls(base, "/storage-data/uploaded/?filepath=" + url[len("/data/"):])
                    try:
                        return self._download(proxy, target)
                    except _NotFound:
                        pass
                raise MediaError("Label Studio has no such file (deleted, or the task names a wrong path); "
                                 f"re-upload it or fix the task's data (HTTP 404 for {short_url(url)})") from None
        if parsed.scheme in ("http", "https"):
            return self._download(url, target)
        raise MediaError(
            f"unsupported image URL {short_url(url)}: use an http(s) URL, a Label Studio upload, "
            "Local Storage, s3/gs/azure-blob cloud storage or a data:image/...;base64 URI"
        )

    def local_file_path(self, url: str) -> str:
        """`/data/local-files/?d=<rel>` -> a path inside LOCAL_FILES_DOCUMENT_ROOT; escapes refused."""
        root = os.path.realpath(self.settings.local_files_document_root)
        values = parse_qs(urlparse(url).query, keep_blank_values=True).get("d") or [""]
        relative = values[-1]
        if not relative or "\x00" in relative:
            raise MediaError("the Local Storage URL has no file path (?d=...)")
        normalised = posixpath.normpath(relative).lstrip("/")
        candidate = os.path.realpath(os.path.join(root, normalised))
        if os.path.commonpath([candidate, root]) != root:
            raise MediaError(f"refused Local Storage path {relative!r}: it escapes LOCAL_FILES_DOCUMENT_ROOT")
        return candidate

    # ----- helpers ----------------------------------------------------------------------------

    def _require_ls(self, target: LabelStudioTarget, url: str) -> str:
        if not target.url:
            raise MediaError(
                f"{short_url(url)} is a Label Studio file and this project has no Label Studio address: set "
                "LABEL_STUDIO_URL to Label Studio's address as seen from this backend (e.g. "
                "http://label-studio:8080), or reconnect the model in the project's settings so that Label "
                "Studio sends its own (/setup)"
            )
        if not target.key:
            raise MediaError(
                f"{short_url(url)} is a Label Studio file and this project has no Label Studio key: set "
                "LABEL_STUDIO_API_KEY to an access token (Label Studio → Account & Settings → Access Token), "
                "or reconnect the model in the project's settings so that Label Studio sends the project's "
                "own token (/setup)"
            )
        return target.url

    def _decode_data_uri(self, url: str) -> bytes:
        """`data:image/png;base64,...` -> bytes, within MAX_DOWNLOAD_BYTES (checked before decoding)."""
        header, comma, payload = url[5:].partition(",")
        params = [p.strip().lower() for p in header.split(";")]
        media_type = params[0] or "text/plain"
        if not comma:
            raise MediaError(f"{short_url(url)} has no ',' before its data: write data:image/png;base64,<data>")
        if not media_type.startswith("image/"):
            raise MediaError(f"{short_url(url)} holds {media_type}, not an image: use data:image/...;base64,<data>")
        limit = self.settings.max_download_bytes
        if "base64" in params[1:]:
            compact = "".join(payload.split())  # some encoders wrap lines
            if len(compact) // 4 * 3 > limit:
                raise MediaError(self._too_large(source_name(url), len(compact) // 4 * 3))
            try:
                data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise MediaError(
                    f"{source_name(url)} is not valid base64: re-encode the file (e.g. base64 -w0 image.png)"
                ) from None
        else:
            data = unquote_to_bytes(payload)
        if len(data) > limit:
            raise MediaError(self._too_large(source_name(url), len(data)))
        return data

    def _read_file(self, path: str) -> bytes:
        size = os.path.getsize(path)
        if size > self.settings.max_download_bytes:
            raise MediaError(self._too_large(os.path.basename(path), size))
        with open(path, "rb") as f:
            return f.read(self.settings.max_download_bytes + 1)

    def _too_large(self, what: str, size: int | None = None) -> str:
        shown = f" ({size:,} bytes)" if size else ""
        return (
            f"the image is too large to download: make it smaller, or raise MAX_DOWNLOAD_BYTES ({what}{shown} is "
            f"larger than the download limit of {self.settings.max_download_bytes:,} bytes)"
        )

    def auth_header(self, target: LabelStudioTarget) -> str:
        """`Token <legacy>` or `Bearer <access>` (personal access tokens refreshed by LabelStudio).

        Raises KeyRefusedError or LabelStudioUnreachableError when a refresh token cannot be exchanged.
        """
        host, token = target.url, target.key
        if not is_jwt_well_formed(token):
            return f"Token {token}"
        with self._lock:
            client = self._ls_clients.get((host, token))
            try:
                if client is None:
                    client = LabelStudio(base_url=host, api_key=token, timeout=self.settings.download_timeout)
                    self._ls_clients[(host, token)] = client
                tokens = client._client_wrapper._tokens_client
                if tokens.jwt_token_type(token) == "access":
                    return f"Bearer {token}"
                return client._client_wrapper.get_headers()["Authorization"]
            except Exception as exc:  # ApiError 401 (expired/revoked), connection errors
                self._ls_clients.pop((host, token), None)
                if is_connection_error(exc):
                    raise LabelStudioUnreachableError(
                        f"could not reach Label Studio at {host} to refresh {target.key_name} ({error_text(exc)}): "
                        f"{target.fix_host}"
                    ) from None
                raise KeyRefusedError(
                    f"Label Studio refused the API key ({target.key_name}: {error_text(exc)}): {target.fix_key}"
                ) from None

    def _download(self, url: str, target: LabelStudioTarget) -> bytes:
        ls_netloc = urlparse(target.url).netloc.lower() if target.url else None
        deadline = time.monotonic() + self.settings.download_timeout
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            parsed = urlparse(current)
            is_ls = ls_netloc is not None and parsed.netloc.lower() == ls_netloc
            ips = check_destination(current, self.settings, trusted_netloc=ls_netloc)
            headers = {}
            if is_ls and target.key:
                headers["Authorization"] = self.auth_header(target)
            targets = [current]
            if parsed.scheme == "http" and ips:
                # Connect to the addresses we checked (no second DNS answer: DNS rebinding), each in turn
                # as a plain connect would; https needs no pinning: the certificate must match the name.
                port = f":{parsed.port}" if parsed.port else ""
                literals = dict.fromkeys(f"[{ip}]" if ip.version == 6 else str(ip) for ip in ips)
                targets = [parsed._replace(netloc=literal + port).geturl() for literal in literals]
                headers["Host"] = parsed.netloc.rsplit("@", 1)[-1]
            try:
                with contextlib.ExitStack() as stack:
                    response = self._open(stack, targets, headers)
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaError(f"the image's server answered with a broken redirect: check the task's "
                                             f"image URL ({short_url(current)} redirected without a Location)")
                        current = urljoin(current, location)
                        continue
                    self._check_status(response, current, target if is_ls else None)
                    return self._read_body(response, current, deadline)
            except httpx.TimeoutException:
                raise MediaError(
                    "the image took too long to download: try again, or raise DOWNLOAD_TIMEOUT (timed out after "
                    f"{self.settings.download_timeout:g} s downloading {short_url(current)})"
                ) from None
            except httpx.HTTPError as exc:
                detail = f"could not download {short_url(current)} ({error_text(exc)})"
                if is_ls:
                    raise LabelStudioUnreachableError(f"Label Studio could not be reached: {target.fix_host} ({detail})") from None
                raise MediaError(f"the image's server could not be reached: check the task's image URL ({detail})") from None
        raise MediaError(f"the image's server redirects in a loop: check the task's image URL (too many redirects "
                         f"(> {MAX_REDIRECTS}) downloading {short_url(url)})")

    def _open(self, stack: contextlib.ExitStack, targets: list[str], headers: dict) -> httpx.Response:
        """The response of the first target that accepts the connection (later ones on ConnectError)."""
        for target in targets[:-1]:
            try:
                return stack.enter_context(self.client.stream("GET", target, headers=headers))
            except httpx.ConnectError:
                continue
        return stack.enter_context(self.client.stream("GET", targets[-1], headers=headers))

    def _check_status(self, response: httpx.Response, url: str, ls: LabelStudioTarget | None) -> None:
        """`ls`: the Label Studio target when `url` is on Label Studio's host, else None."""
        code = response.status_code
        if code < 400:
            return
        detail = f"HTTP {code} downloading {short_url(url)}"
        if code == 404:
            raise _NotFound(f"the image's server has no such file: fix the task's image URL (HTTP 404 for "
                            f"{short_url(url)})")
        if ls is not None and code in (401, 403):
            raise KeyRefusedError(
                f"Label Studio refused the API key ({ls.key_name}, HTTP {code}) for {short_url(url)}: {ls.fix_key}"
            )
        if ls is not None and code >= 500:
            # Label Studio 1.23 answers 500 (not 404) for an upload whose file is gone
            if "/data/upload/" in url or "/storage-data/uploaded/" in url:
                raise MediaError(f"Label Studio could not serve this file (it may have been deleted); re-upload it "
                                 f"({detail})")
            raise MediaError(f"Label Studio could not serve this file: check that it still exists in the project's "
                             f"storage, or see Label Studio's log ({detail})")
        if ls is not None:
            raise MediaError(f"Label Studio would not serve this file ({detail})")
        raise MediaError(f"the image's server would not serve the file: check that the task's image URL opens in "
                         f"a browser ({detail})")

    def _read_body(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        limit = self.settings.max_download_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise MediaError(self._too_large(short_url(url), int(declared)))
        chunks, total = [], 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise MediaError(self._too_large(short_url(url)))
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("deadline")
            chunks.append(chunk)
        return b"".join(chunks)


class _NotFound(MediaError):
    """HTTP 404 (Label Studio uploads then try the storage proxy)."""
