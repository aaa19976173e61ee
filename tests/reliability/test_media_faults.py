"""Media faults through /predict: every bad image is one task's error (or a correct result), and the
good tasks before and after it in the same request come back unchanged."""
from __future__ import annotations

import gzip
import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.reliability.hostile_inputs import png_header_only
from tests.image_bytes import jpeg_bytes, png_bytes
from tests.reliability.misbehaving_host import closed_port, RawServer
from tests.reliability.predict_batches import assert_good_unaffected, predict, same_result, sandwich, url_task

pytestmark = pytest.mark.reliability
GOOD = jpeg_bytes()  # 64 x 48
LIMIT = 200_000


def sixteen_bit_png() -> bytes:
    array = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    image = Image.fromarray(array)
    assert image.mode == "I;16"
    return png_bytes(image)


def cmyk_jpeg() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(GOOD)).convert("CMYK").save(out, "JPEG")
    assert Image.open(io.BytesIO(out.getvalue())).mode == "CMYK"
    return out.getvalue()


def palette_png_with_transparency() -> bytes:
    image = Image.open(io.BytesIO(GOOD)).convert("P", palette=Image.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    data = png_bytes(image, transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    return data


@pytest.fixture
def servers(http_server):
    raw = RawServer(size=LIMIT * 2)
    http_server.file("/good.jpg", GOOD)
    yield http_server, raw
    raw.close()


def test_media_faults_fail_only_their_task(make_client, servers):
    http_server, raw = servers
    s = http_server
    s.routes["/slow.jpg"] = lambda req: (time.sleep(3), (200, {"Content-Type": "image/jpeg"}, GOOD))[1]
    s.routes["/missing.jpg"] = lambda req: (404, {}, b"not found")
    s.routes["/error.jpg"] = lambda req: (500, {}, b"boom")
    s.file("/big.jpg", b"\xff" * (LIMIT + 1))
    s.routes["/gzip-bomb.jpg"] = lambda req: (200, {"Content-Encoding": "gzip"}, gzip.compress(b"\0" * (LIMIT * 50)))
    s.routes["/loop.jpg"] = lambda req: (302, {"Location": "/loop.jpg"}, b"")
    s.routes["/pingpong-a.jpg"] = lambda req: (302, {"Location": "/pingpong-b.jpg"}, b"")
    s.routes["/pingpong-b.jpg"] = lambda req: (302, {"Location": "/pingpong-a.jpg"}, b"")
    s.file("/truncated.jpg", GOOD[: len(GOOD) // 2])
    s.file("/empty.jpg", b"")
    s.file("/text.jpg", b"this is not an image, just text\n" * 10, content_type="text/plain")
    s.file("/html.jpg", b"<html><body>login required</body></html>", content_type="text/html")
    s.file("/huge-header.png", png_header_only(30_000, 30_000), content_type="image/png")
    s.file("/huge-header-wide.png", png_header_only(1_000_000, 200), content_type="image/png")
    faults = {
        "connection refused": (f"http://127.0.0.1:{closed_port()}/x.jpg", ["could not download", "ConnectError"]),
        "slow server": (f"{s.url}/slow.jpg", ["timed out", "DOWNLOAD_TIMEOUT"]),
        "server never answers": (f"{raw.url}/hang.jpg", ["timed out", "DOWNLOAD_TIMEOUT"]),
        "body drips": (f"{raw.url}/drip.jpg", ["timed out", "DOWNLOAD_TIMEOUT"]),
        "404": (f"{s.url}/missing.jpg", ["404"]),
        "500": (f"{s.url}/error.jpg", ["HTTP 500"]),
        "larger than the limit": (f"{s.url}/big.jpg", ["MAX_DOWNLOAD_BYTES"]),
        "larger, no Content-Length": (f"{raw.url}/nolength.jpg", ["MAX_DOWNLOAD_BYTES"]),
        "gzip bomb": (f"{s.url}/gzip-bomb.jpg", ["MAX_DOWNLOAD_BYTES"]),
        "redirect loop": (f"{s.url}/loop.jpg", ["too many redirects"]),
        "redirect ping-pong": (f"{s.url}/pingpong-a.jpg", ["too many redirects"]),
        "truncated JPEG": (f"{s.url}/truncated.jpg", ["truncated"]),
        "empty file": (f"{s.url}/empty.jpg", ["empty"]),
        "text named .jpg": (f"{s.url}/text.jpg", ["not a readable image"]),
        "html named .jpg": (f"{s.url}/html.jpg", ["not a readable image"]),
        "30000x30000 header": (f"{s.url}/huge-header.png", ["too large"]),
        "1000000x200 header": (f"{s.url}/huge-header-wide.png", ["too large"]),
    }
    client = make_client(ALLOWED_MEDIA_HOSTS="127.0.0.1", DOWNLOAD_TIMEOUT=1, MAX_DOWNLOAD_BYTES=LIMIT)
    good = url_task(0, f"{s.url}/good.jpg")
    (reference,) = predict(client, [good])
    bad = [url_task(i + 1, url) for i, (url, _) in enumerate(faults.values())]
    start = time.monotonic()
    results = predict(client, sandwich(bad, good))
    elapsed = time.monotonic() - start
    assert_good_unaffected(results, reference)
    for (name, (url, words)), item in zip(faults.items(), results[1::2]):
        assert "result" not in item, (name, item)
        for word in words:
            assert word.lower() in item["error"].lower(), (name, item["error"])
        assert len(item["error"]) < 600, (name, item["error"])
    print(f"\nmedia faults: {len(faults)} bad tasks each failed alone in one request of {len(results)} "
          f"({elapsed:.1f} s with DOWNLOAD_TIMEOUT=1)")


def test_odd_but_valid_images_give_correct_results(make_client, http_server):
    """16-bit, CMYK and transparent palette images are converted (not refused) and predicted on as RGB."""
    gray8 = np.asarray(Image.open(io.BytesIO(sixteen_bit_png())), dtype=np.float64) / 65535.0 * 255.0
    http_server.file("/good.jpg", GOOD)
    http_server.file("/16bit.png", sixteen_bit_png(), content_type="image/png")
    http_server.file("/gray8.png", png_bytes(Image.fromarray(gray8.astype(np.uint8), "L").convert("RGB")))
    http_server.file("/cmyk.jpg", cmyk_jpeg())
    http_server.file("/cmyk-as-rgb.png", png_bytes(Image.open(io.BytesIO(cmyk_jpeg())).convert("RGB")))
    palette = palette_png_with_transparency()
    http_server.file("/palette.png", palette, content_type="image/png")
    on_white = Image.alpha_composite(Image.new("RGBA", (64, 48), "white"), Image.open(io.BytesIO(palette)).convert("RGBA"))
    http_server.file("/palette-on-white.png", png_bytes(on_white.convert("RGB")))
    client = make_client(ALLOWED_MEDIA_HOSTS="127.0.0.1", BATCH_SIZE=1)
    base = http_server.url
    odd = [url_task(1, f"{base}/16bit.png"), url_task(2, f"{base}/cmyk.jpg"), url_task(3, f"{base}/palette.png")]
    expected = [url_task(1, f"{base}/gray8.png"), url_task(2, f"{base}/cmyk-as-rgb.png"),
                url_task(3, f"{base}/palette-on-white.png")]
    (reference,) = predict(client, [url_task(0, f"{base}/good.jpg")])
    results = predict(client, sandwich(odd, url_task(0, f"{base}/good.jpg")))
    assert_good_unaffected(results, reference)
    want = predict(client, expected)
    for task, got, exp in zip(odd, results[1::2], want):
        assert "error" not in got, (task, got)
        assert (got["result"][0]["original_width"], got["result"][0]["original_height"]) == (64, 48) if got["result"] else True
        assert same_result(got, exp, tol=0.02), (task["data"]["image"], got, exp)


INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
           7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def stored_with_orientation(upright: Image.Image, orientation: int, fmt: str) -> bytes:
    """The bytes a camera would store: pixels in sensor order plus the EXIF tag that shows them upright."""
    stored = upright if INVERSE[orientation] is None else upright.transpose(INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_exif_orientations_1_to_8_give_the_upright_result(make_client, http_server):
    upright = Image.open(io.BytesIO(GOOD)).convert("RGB")  # 64 x 48
    http_server.file("/upright.png", png_bytes(upright), content_type="image/png")
    tasks = []
    for k in range(1, 9):
        http_server.file(f"/o{k}.png", stored_with_orientation(upright, k, "PNG"), content_type="image/png")
        http_server.file(f"/o{k}.jpg", stored_with_orientation(upright, k, "JPEG"))
        tasks += [url_task(k, f"{http_server.url}/o{k}.png"), url_task(10 + k, f"{http_server.url}/o{k}.jpg")]
    client = make_client(ALLOWED_MEDIA_HOSTS="127.0.0.1")
    (reference,) = predict(client, [url_task(0, f"{http_server.url}/upright.png")])
    assert reference["result"]
    results = predict(client, tasks)
    for k in range(1, 9):
        lossless, jpeg = results[2 * (k - 1)], results[2 * (k - 1) + 1]
        assert same_result(lossless, reference), (k, lossless)
        assert "error" not in jpeg, (k, jpeg)
        for region in jpeg["result"]:
            assert (region["original_width"], region["original_height"]) == (64, 48), k
            v = region["value"]
            assert 0 <= v["x"] <= 100 and 0 <= v["y"] <= 100 and v["x"] + v["width"] <= 100.0001
            assert v["y"] + v["height"] <= 100.0001
