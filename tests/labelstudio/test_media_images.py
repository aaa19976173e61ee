"""Media -> images: data: URIs within the limits, and every decoding failure named by its URL and setting."""
import base64
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from labelstudio.media import MediaFetcher
from labelstudio.media_errors import MediaError
from tests.image_bytes import jpeg_bytes
from tests.reliability.hostile_inputs import png_header_only

IMAGE = jpeg_bytes()  # 64 x 48


def png(size=(3, 2)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


def data_uri(data: bytes, media_type="image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def fetcher(make_settings, **env):
    return MediaFetcher(make_settings(**env))


# ----- data: URIs ----------------------------------------------------------------------------------

def test_data_uri_is_decoded_to_the_same_image(make_settings):
    f = fetcher(make_settings)
    assert f.fetch(data_uri(IMAGE, "image/jpeg")) == IMAGE
    uri = data_uri(png())
    assert f.fetch(uri[:40] + "\n" + uri[40:80] + "\r\n" + uri[80:]) == png()  # line-wrapped base64
    unpadded = data_uri(png()).rstrip("=")
    assert f.fetch(unpadded) == png()
    image = f.fetch_image(data_uri(png()))
    assert image.size == (3, 2) and np.asarray(image)[0, 0].tolist() == [10, 20, 30]
    assert f.fetch("data:image/svg+xml,%3Csvg%2F%3E") == b"<svg/>"  # not base64: percent-encoded


def test_bad_data_uris_say_what_is_wrong(make_settings):
    f = fetcher(make_settings)
    cases = {
        "data:image/png;base64,AAA*": "the image of a data: URI (data:image/png;base64, 26 characters) is not valid "
                                      "base64: re-encode the file (e.g. base64 -w0 image.png)",
        "data:text/plain;base64,aGVsbG8=": "a data: URI (data:text/plain;base64, 31 characters) holds text/plain, not "
                                           "an image: use data:image/...;base64,<data>",
        "data:image/png;base64": "a data: URI (data:image/png;base64, 21 characters) has no ',' before its data: "
                                 "write data:image/png;base64,<data>",
    }
    for uri, message in cases.items():
        with pytest.raises(MediaError) as err:
            f.fetch(uri)
        assert str(err.value) == message


def test_data_uri_stays_within_the_byte_and_pixel_limits(make_settings):
    too_many_bytes = data_uri(b"\x00" * 3000)
    with pytest.raises(MediaError) as err:
        fetcher(make_settings, MAX_DOWNLOAD_BYTES=2000).fetch(too_many_bytes)
    assert str(err.value) == (
        "the image is too large to download: make it smaller, or raise MAX_DOWNLOAD_BYTES (the image of a data: URI "
        "(data:image/png;base64, 4,022 characters) (3,000 bytes) is larger than the download limit of 2,000 bytes)"
    )
    big = data_uri(png((100, 50)))
    with pytest.raises(MediaError) as err:
        fetcher(make_settings, MAX_IMAGE_PIXELS=4999).fetch_image(big)
    assert str(err.value) == (
        f"the image of a data: URI (data:image/png;base64, {len(big):,} characters) is an image too large to "
        "process: 100x50 = 5,000 pixels exceeds the limit of 4,999 (MAX_IMAGE_PIXELS)"
    )
    assert fetcher(make_settings, MAX_IMAGE_PIXELS=5000).fetch_image(big).size == (100, 50)
    with pytest.raises(MediaError) as err:
        fetcher(make_settings).fetch_image(data_uri(b"GIF89a-but-not-really", "image/gif"))
    assert str(err.value).endswith("is not a readable image (PIL does not know its format; it is text starting "
                                   'with "GIF89a-but-not-really")')


# ----- decoding failures of downloaded files ---------------------------------------------------------

@pytest.mark.parametrize(
    "body, problem",
    [
        (b"<!DOCTYPE html><html><body>Please log in", 'is not a readable image (PIL does not know its format; it is '
                                                      'text starting with "<!DOCTYPE html><html><body>Please log in")'),
        (bytes(range(256)), "is not a readable image (PIL does not know its format)"),
        (b"", "is empty"),
        (IMAGE[:-50], "is a damaged or truncated image (OSError: image file is truncated (8 bytes not processed))"),
    ],
)
def test_unreadable_files_are_named_by_url_without_python_reprs(make_settings, http_server, body, problem):
    http_server.file("/x.jpg", body)
    f = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="127.0.0.1")
    with pytest.raises(MediaError) as err:
        f.fetch_image(http_server.url + "/x.jpg?X-Amz-Signature=secret")
    assert str(err.value) == f"the file at {http_server.url}/x.jpg {problem}"


def test_pixel_limit_is_ours_and_pil_warns_nothing(make_settings, http_server):
    """A header of 90 M pixels (over PIL's 89 M warning) and one of 200 M (over PIL's 179 M error):
    MAX_IMAGE_PIXELS alone decides, and PIL's DecompressionBombWarning never reaches the log."""
    http_server.file("/90m.png", png_header_only(10_000, 9_000))
    http_server.file("/200m.png", png_header_only(20_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        small = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="127.0.0.1", MAX_IMAGE_PIXELS=50_000_000)
        with pytest.raises(MediaError) as err:
            small.fetch_image(http_server.url + "/90m.png")
        assert str(err.value) == (
            f"the file at {http_server.url}/90m.png is an image too large to process: 10000x9000 = 90,000,000 "
            "pixels exceeds the limit of 50,000,000 (MAX_IMAGE_PIXELS)"
        )
        large = fetcher(make_settings, ALLOWED_MEDIA_HOSTS="127.0.0.1", MAX_IMAGE_PIXELS=300_000_000)
        for name in ("90m.png", "200m.png"):  # allowed: they get as far as decoding their (missing) pixels
            with pytest.raises(MediaError, match="is a damaged or truncated image"):
                large.fetch_image(f"{http_server.url}/{name}")
