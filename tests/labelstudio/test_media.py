"""Media fetching: Label Studio URLs and tokens, cloud presign, limits, SSRF guard, path traversal."""
import base64
import os
import time

import pytest

from labelstudio.media import MediaFetcher
from labelstudio.media_errors import KeyRefusedError, MediaError
from tests.image_bytes import jpeg_bytes
from tests.http_server import LocalServer
from tests.labelstudio.tokens import make_jwt

IMAGE = jpeg_bytes()
TOKEN = "legacy0123456789"


def fetcher(make_settings, **env):
    return MediaFetcher(make_settings(**env))


def token_route(expected, data=IMAGE):
    def route(req):
        if req["headers"].get("Authorization") != expected:
            return 401, {}, b'{"detail": "Invalid token."}'
        return 200, {"Content-Type": "image/jpeg"}, data

    return route


def test_upload_with_legacy_token(make_settings, http_server):
    http_server.routes["/data/upload/3/x.jpg"] = token_route(f"Token {TOKEN}")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN)
    assert f.fetch("/data/upload/3/x.jpg", task_id=1) == IMAGE
    assert f.fetch("upload/3/x.jpg") == IMAGE  # raw upload keys of exports


def test_setup_credentials_are_the_fallback(make_settings, http_server):
    http_server.routes["/data/upload/3/x.jpg"] = token_route(f"Token {TOKEN}")
    f = fetcher(make_settings)
    assert f.fetch("/data/upload/3/x.jpg", hostname=http_server.url + "/", access_token=TOKEN) == IMAGE
    with pytest.raises(MediaError, match="set LABEL_STUDIO_URL"):
        f.fetch("/data/upload/3/x.jpg")
    with pytest.raises(MediaError, match="set LABEL_STUDIO_API_KEY"):
        f.fetch("/data/upload/3/x.jpg", hostname=http_server.url)


def test_upload_falls_back_to_the_storage_proxy(make_settings, http_server):
    http_server.routes["/storage-data/uploaded/"] = token_route(f"Token {TOKEN}")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN)
    assert f.fetch("/data/upload/3/x.jpg") == IMAGE
    assert http_server.requests[-1]["path"] == "/storage-data/uploaded/?filepath=upload/3/x.jpg"
    with pytest.raises(MediaError, match="HTTP 404"):
        f.fetch("/data/other/none.jpg")


def test_a_failed_download_says_first_what_a_labeller_can_do_then_the_detail(make_settings, http_server):
    """Label Studio 1.23 answers 500 for an upload whose file is gone; the Data Manager shows ~3 lines of a note."""
    http_server.routes["/data/upload/999/missing.jpg"] = lambda req: (500, {}, b"Server Error (500)")
    http_server.routes["/data/other/broken.jpg"] = lambda req: (502, {}, b"bad gateway")
    http_server.routes["/elsewhere.jpg"] = lambda req: (403, {}, b"forbidden")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN,
                ALLOWED_MEDIA_HOSTS="127.0.0.1")
    cases = {
        "/data/upload/999/missing.jpg": "Label Studio could not serve this file (it may have been deleted); re-upload "
                                        f"it (HTTP 500 downloading {http_server.url}/data/upload/999/missing.jpg)",
        "/data/other/broken.jpg": "Label Studio could not serve this file: check that it still exists in the "
                                  "project's storage, or see Label Studio's log (HTTP 502 downloading "
                                  f"{http_server.url}/data/other/broken.jpg)",
        "/data/other/none.jpg": "Label Studio has no such file (deleted, or the task names a wrong path); re-upload "
                                "it or fix the task's data (HTTP 404 for /data/other/none.jpg)",
    }
    for url, message in cases.items():
        with pytest.raises(MediaError) as err:
            f.fetch(url)
        assert str(err.value) == message
    # another server than Label Studio (the same address here, reached by a URL of its own: not "Label Studio")
    other = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="127.0.0.1")
    with pytest.raises(MediaError) as err:
        other.fetch(f"{http_server.url}/elsewhere.jpg")
    assert str(err.value) == ("the image's server would not serve the file: check that the task's image URL opens in "
                              f"a browser (HTTP 403 downloading {http_server.url}/elsewhere.jpg)")
    with pytest.raises(MediaError) as err:
        other.fetch(f"{http_server.url}/gone.jpg")
    assert str(err.value) == ("the image's server has no such file: fix the task's image URL (HTTP 404 for "
                              f"{http_server.url}/gone.jpg)")


def test_wrong_token_is_answered_with_what_to_do(make_settings, http_server):
    http_server.routes["/data/upload/3/x.jpg"] = token_route(f"Token {TOKEN}")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY="nope")
    with pytest.raises(KeyRefusedError) as err:
        f.fetch("/data/upload/3/x.jpg")
    assert str(err.value) == (
        f"Label Studio refused the API key (LABEL_STUDIO_API_KEY, HTTP 401) for {http_server.url}/data/upload/3/x.jpg: "
        "set LABEL_STUDIO_API_KEY to a valid access token of a user with access to this project "
        "(Label Studio → Account & Settings → Access Token)"
    )
    with pytest.raises(KeyRefusedError) as err:  # the project's own token, from /setup
        fetcher(make_settings).fetch("/data/upload/3/x.jpg", hostname=http_server.url, access_token="nope")
    assert str(err.value) == (
        f"Label Studio refused the API key (the project's /setup token, HTTP 401) for "
        f"{http_server.url}/data/upload/3/x.jpg: set LABEL_STUDIO_API_KEY to a valid access token "
        "(Label Studio → Account & Settings → Access Token; it takes precedence), or reconnect the model in the "
        "project's settings"
    )


def test_personal_access_token_is_refreshed_through_the_sdk(make_settings, http_server):
    refresh, access = make_jwt("refresh"), make_jwt("access", 600)

    def refresh_route(req):
        import json

        if json.loads(req["body"]) != {"refresh": refresh}:
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Token is invalid"}'
        return 200, {"Content-Type": "application/json"}, json.dumps({"access": access}).encode()

    http_server.routes["/api/token/refresh/"] = refresh_route
    http_server.routes["/data/upload/3/x.jpg"] = token_route(f"Bearer {access}")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=refresh)
    assert f.fetch("/data/upload/3/x.jpg") == IMAGE
    assert f.fetch("/data/upload/3/x.jpg") == IMAGE
    assert [r["path"] for r in http_server.requests].count("/api/token/refresh/") == 1  # cached until expiry

    other = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=make_jwt("refresh"))
    with pytest.raises(MediaError, match="Label Studio refused the API key"):
        other.fetch("/data/upload/3/x.jpg")
    expired = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=make_jwt("refresh", -60))
    with pytest.raises(KeyRefusedError) as err:
        expired.fetch("/data/upload/3/x.jpg")
    assert str(err.value).startswith(  # the SDK's detail, not its ApiError repr
        "Label Studio refused the API key (LABEL_STUDIO_API_KEY: API key has expired. Please obtain a new refresh "
        "token.): set LABEL_STUDIO_API_KEY to a valid access token"
    )


def test_cloud_storage_through_presign_without_leaking_the_token(make_settings, http_server):
    bucket = LocalServer()  # stands for S3: another host
    try:
        bucket.file("/bucket/x.jpg", IMAGE)
        uri = "s3://bucket/x.jpg"
        presign = "/tasks/7/presign/"

        def presign_route(req):
            if req["headers"].get("Authorization") != f"Token {TOKEN}":
                return 401, {}, b""
            assert req["path"] == presign + "?fileuri=" + base64.urlsafe_b64encode(uri.encode()).decode()
            return 303, {"Location": bucket.url + "/bucket/x.jpg?X-Amz-Signature=abc"}, b""

        http_server.routes[presign] = presign_route
        f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN,
                    ALLOWED_MEDIA_HOSTS=f"127.0.0.1:{bucket.port}")
        assert f.fetch(uri, task_id=7) == IMAGE
        assert "Authorization" not in bucket.requests[0]["headers"]
        with pytest.raises(MediaError, match="task id"):
            f.fetch(uri)
        for scheme in ("gs://b/x.jpg", "azure-blob://c/x.jpg"):
            with pytest.raises(MediaError, match="404"):
                f.fetch(scheme, task_id=8)
    finally:
        bucket.close()


# ----- SSRF --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "template",
    [
        "{url}/x.jpg",
        "http://localhost:{port}/x.jpg",
        "http://2130706433:{port}/x.jpg",  # 127.0.0.1 as a decimal number
        "http://0x7f000001:{port}/x.jpg",  # ... as hex
        "http://127.1:{port}/x.jpg",
        "http://[::1]:{port}/x.jpg",
        "http://[::ffff:127.0.0.1]:{port}/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x.jpg",
        "http://192.168.0.1/x.jpg",
        "http://0.0.0.0:{port}/x.jpg",
    ],
)
def test_internal_addresses_are_refused(make_settings, http_server, template):
    http_server.file("/x.jpg", IMAGE)
    url = template.format(url=http_server.url, port=http_server.port)
    with pytest.raises(MediaError) as err:
        fetcher(make_settings).fetch(url)
    assert "refused" in str(err.value) or "cannot resolve" in str(err.value)
    assert "ALLOWED_MEDIA_HOSTS" in str(err.value) or "cannot resolve" in str(err.value)
    assert http_server.requests == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.jpg", "gopher://127.0.0.1/",
                                 "C:\\images\\x.jpg", ""])
def test_other_schemes_are_refused(make_settings, url):
    with pytest.raises(MediaError, match="unsupported|no image URL"):
        fetcher(make_settings).fetch(url)


@pytest.mark.parametrize("allowed", ["127.0.0.1", "127.0.0.1:{port}", "127.0.0.0/8"])
def test_allowed_media_hosts(make_settings, http_server, allowed):
    http_server.file("/x.jpg", IMAGE)
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="example.org, " + allowed.format(port=http_server.port))
    assert f.fetch(http_server.url + "/x.jpg") == IMAGE
    assert "Authorization" not in http_server.requests[0]["headers"]


def test_redirects_are_checked_like_the_first_url(make_settings, http_server):
    http_server.file("/x.jpg", IMAGE)
    http_server.routes["/to-metadata"] = lambda req: (302, {"Location": "http://169.254.169.254/latest/"}, b"")
    http_server.routes["/to-localhost"] = lambda req: (302, {"Location": f"http://localhost:{http_server.port}/x.jpg"}, b"")
    http_server.routes["/to-file"] = lambda req: (302, {"Location": "file:///etc/passwd"}, b"")
    http_server.routes["/ok"] = lambda req: (301, {"Location": "/x.jpg"}, b"")
    http_server.routes["/loop"] = lambda req: (302, {"Location": "/loop"}, b"")
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS=f"127.0.0.1:{http_server.port}")
    assert f.fetch(http_server.url + "/ok") == IMAGE
    for path, message in [("/to-metadata", "169.254"), ("/to-localhost", "localhost"), ("/to-file", "only http"),
                          ("/loop", "too many redirects")]:
        with pytest.raises(MediaError, match=message):
            f.fetch(http_server.url + path)


def test_label_studio_host_may_be_private(make_settings, http_server):
    http_server.routes["/data/upload/1/x.jpg"] = token_route(f"Token {TOKEN}")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN)
    assert f.fetch(http_server.url + "/data/upload/1/x.jpg") == IMAGE  # absolute LS URL: token sent
    assert f.fetch("/data/upload/1/x.jpg") == IMAGE


# ----- limits --------------------------------------------------------------------------------------

def test_download_size_limit(make_settings, http_server, media_root):
    http_server.file("/big.jpg", b"x" * 5000)
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="127.0.0.1", MAX_DOWNLOAD_BYTES=1000,
                LOCAL_FILES_DOCUMENT_ROOT=media_root)
    with pytest.raises(MediaError, match="MAX_DOWNLOAD_BYTES"):
        f.fetch(http_server.url + "/big.jpg")
    (media_root / "big.jpg").write_bytes(b"x" * 5000)
    with pytest.raises(MediaError, match="MAX_DOWNLOAD_BYTES"):
        f.fetch("/data/local-files/?d=big.jpg")


def test_download_timeout(make_settings, http_server):
    def slow(req):
        time.sleep(2)
        return 200, {}, IMAGE

    http_server.routes["/slow.jpg"] = slow
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="127.0.0.1", DOWNLOAD_TIMEOUT=0.3)
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"^the image took too long to download: try again, or raise DOWNLOAD_TIMEOUT "
                                         r"\(timed out after 0.3 s downloading http://127\.0\.0\.1:\d+/slow\.jpg\)$"):
        f.fetch(http_server.url + "/slow.jpg")
    assert time.monotonic() - start < 1.9


# ----- Local Storage -------------------------------------------------------------------------------

def test_local_storage_reads_under_the_root(make_settings, media_root):
    f = fetcher(make_settings, LOCAL_FILES_DOCUMENT_ROOT=media_root)
    assert f.fetch("/data/local-files/?d=sub/b.jpg") == (media_root / "sub" / "b.jpg").read_bytes()
    assert f.fetch("/data/local-files/?d=sub%2Fb.jpg") == (media_root / "sub" / "b.jpg").read_bytes()


@pytest.mark.parametrize(
    "d", ["../secret.jpg", "sub/../../secret.jpg", "%2E%2E/secret.jpg", "..%2Fsecret.jpg", "sub/../../media/../secret.jpg",
          "link/secret.jpg"],
)
def test_path_traversal_is_refused(make_settings, media_root, d):
    os.symlink(media_root.parent, media_root / "link")  # a symlink out of the root
    f = fetcher(make_settings, LOCAL_FILES_DOCUMENT_ROOT=media_root)
    with pytest.raises(MediaError, match="escapes LOCAL_FILES_DOCUMENT_ROOT"):
        f.fetch(f"/data/local-files/?d={d}")


def test_absolute_local_path_stays_under_the_root(make_settings, media_root):
    f = fetcher(make_settings, LOCAL_FILES_DOCUMENT_ROOT=media_root)
    with pytest.raises(MediaError, match="not under LOCAL_FILES_DOCUMENT_ROOT"):
        f.fetch("/data/local-files/?d=/etc/passwd")
    assert f.fetch("/data/local-files/?d=/sub/b.jpg") == (media_root / "sub" / "b.jpg").read_bytes()


def test_local_storage_without_root_goes_through_label_studio(make_settings, http_server):
    http_server.routes["/data/local-files/"] = token_route(f"Token {TOKEN}")
    f = fetcher(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN)
    assert f.fetch("/data/local-files/?d=dir/1.jpg") == IMAGE
    assert http_server.requests[-1]["path"] == "/data/local-files/?d=dir/1.jpg"


def test_http_connects_to_the_checked_address_with_the_original_host(make_settings, http_server, monkeypatch):
    """The name is resolved once, checked, and that address is used (no second DNS answer to rebind)."""
    import socket

    import labelstudio.destinations

    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        return real("127.0.0.1" if host == "media.example" else host, *args, **kwargs)

    monkeypatch.setattr(labelstudio.destinations.socket, "getaddrinfo", fake)
    http_server.file("/x.jpg", IMAGE)
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="media.example")
    assert f.fetch(f"http://media.example:{http_server.port}/x.jpg") == IMAGE
    assert http_server.requests[-1]["headers"]["Host"] == f"media.example:{http_server.port}"


def test_http_tries_every_checked_address_in_turn(make_settings, http_server, monkeypatch):
    """A name whose first address refuses (a dead record, IPv6 without a route) still downloads."""
    import socket

    import labelstudio.destinations

    real = socket.getaddrinfo
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
    dead_port = closed.getsockname()[1]

    def fake(host, port, *args, **kwargs):
        if host != "media.example":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.9", port)),
                *real("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)]

    monkeypatch.setattr(labelstudio.destinations.socket, "getaddrinfo", fake)
    http_server.file("/x.jpg", IMAGE)
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="media.example")
    try:
        with pytest.raises(MediaError, match="could not download"):  # every address refuses: one clear error
            f.fetch(f"http://media.example:{dead_port}/x.jpg")
    finally:
        closed.close()
    assert f.fetch(f"http://media.example:{http_server.port}/x.jpg") == IMAGE
    assert http_server.requests[-1]["headers"]["Host"] == f"media.example:{http_server.port}"


def test_messages_name_a_local_storage_file_but_never_a_signature():
    from labelstudio.urls import short_url

    assert short_url("/data/local-files/?d=images/cat%201.jpg") == "/data/local-files/?d=images/cat 1.jpg"
    assert short_url("http://ls:8080/data/local-files/?d=a/b.png&x=1") == "http://ls:8080/data/local-files/?d=a/b.png"
    assert short_url("https://bucket.s3.amazonaws.com/x.jpg?X-Amz-Signature=secret") == "https://bucket.s3.amazonaws.com/x.jpg"
