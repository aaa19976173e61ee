"""Hostile inputs shared by the hostile-input tests and the fuzzer: SSRF targets, data: URIs, path escapes,
configs. (A config with duplicate labels is no longer refused: the first of each is served and the others
reported, see tests/labelstudio/test_label_config.py.)"""
from __future__ import annotations

import base64
import struct
import zlib

from tests.image_bytes import jpeg_bytes
from tests.reliability.predict_batches import config

IMAGE = jpeg_bytes()


SSRF_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.169.254:{port}/x.jpg",
    "http://127.0.0.1:{port}/x.jpg",
    "http://localhost:{port}/x.jpg",
    "http://[::1]:{port}/x.jpg",
    "http://[::1]/x.jpg",
    "http://[::ffff:127.0.0.1]:{port}/x.jpg",
    "http://[::]:{port}/x.jpg",
    "http://2130706433:{port}/x.jpg",  # decimal 127.0.0.1
    "http://0x7f000001:{port}/x.jpg",  # hex
    "http://017700000001:{port}/x.jpg",  # octal
    "http://127.1:{port}/x.jpg",
    "http://127.000.000.001:{port}/x.jpg",
    "http://0:{port}/x.jpg",
    "http://10.0.0.1/x.jpg",
    "http://172.16.0.1/x.jpg",
    "http://192.168.1.1/x.jpg",
    "http://100.64.0.1/x.jpg",  # carrier-grade NAT
    "http://[fe80::1%25lo]:{port}/x.jpg",  # link-local IPv6 with a zone
    "http://[fd00::1]/x.jpg",  # unique local IPv6
    "http://user:pw@127.0.0.1:{port}/x.jpg",
    "http://example.com@127.0.0.1:{port}/x.jpg",
    "file:///etc/passwd",
    "file://127.0.0.1/etc/passwd",
    "gopher://127.0.0.1:{port}/_GET%20/x.jpg",
    "ftp://127.0.0.1:{port}/x.jpg",
    "dict://127.0.0.1:{port}/",
]


# data: URIs are decoded (Label Studio displays them), never fetched: these must fail per task, by reason.
HOSTILE_DATA_URIS = {
    "not base64": ("data:image/jpeg;base64,@@@not-base64@@@", "not valid base64"),
    "not an image type": ("data:text/html;base64," + base64.b64encode(b"<script>x</script>").decode(), "not an image"),
    "image type, HTML inside": ("data:image/png;base64," + base64.b64encode(b"<html>login</html>").decode(),
                                "not a readable image"),
    "over the byte limit": ("data:image/jpeg;base64," + "A" * 4_000_000, "MAX_DOWNLOAD_BYTES"),
    "no comma": ("data:image/png;base64" + "A" * 100, "no ','"),
}


ESCAPES = ["../outside.jpg", "./../outside.jpg", "%2e%2e/outside.jpg", "..%2Foutside.jpg", "a.jpg/../../outside.jpg",
           "....//outside.jpg", "up/outside.jpg", "up/media/../outside.jpg", "..\\outside.jpg", "/../outside.jpg",
           "%00a.jpg", "a.jpg%00.png"]


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + ']>' + config('<RectangleLabels name="label" toName="image"><Label value="&lol9;"/></RectangleLabels>')
)


def hostile_configs(port: int) -> dict[str, tuple[str, str]]:
    """name -> (config, what the 422 detail must say)."""
    rl = '<RectangleLabels name="label" toName="image">{}</RectangleLabels>'
    return {
        "malformed XML": ("<View><Image name='image' value='$image'><RectangleLabels", "not valid XML"),
        "not XML at all": ("just some text", "not valid XML"),
        "unclosed tag": (config(rl.format('<Label value="Cat">')), "not valid XML"),
        "no Image": (config(rl.format('<Label value="Cat"/>'), images=""), "no <Image"),
        "Image without $value": (config(rl.format('<Label value="Cat"/>'), images='<Image name="image" value="x"/>'),
                                 "no <Image"),
        "no RectangleLabels": (config('<Choices name="c" toName="image"><Choice value="x"/></Choices>'),
                               "no <RectangleLabels>"),
        "empty label set": (config(rl.format("")), "has no <Label"),
        "label without value": (config(rl.format('<Label value=""/><Label value="  "/>')), "the value is blank"),
        "label of dots only": (config(rl.format('<Label value="..."/>')), "phrase"),
        "one label over 256 tokens": (config(rl.format(f'<Label value="{" ".join(["word"] * 300)}"/>')),
                                      "256 tokens"),
        "billion laughs": (BILLION_LAUGHS, "DOCTYPE or ENTITY"),
        "external entity": ('<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                            + config(rl.format('<Label value="&e;"/>')), "DOCTYPE or ENTITY"),
        "parameter entity over http": (f'<!DOCTYPE v [<!ENTITY % x SYSTEM "http://127.0.0.1:{port}/evil.dtd"> %x;]>'
                                       + config(rl.format('<Label value="Cat"/>')), "DOCTYPE or ENTITY"),
        "lowercase doctype": ('<!doctype v [<!entity e "x">]>' + config(rl.format('<Label value="&e;"/>')),
                              "DOCTYPE or ENTITY"),
        "undeclared entity": (config(rl.format('<Label value="&lol9;"/>')), "not valid XML"),
        "bad threshold": (config('<RectangleLabels name="label" toName="image" model_score_threshold="nan">'
                                 '<Label value="Cat"/></RectangleLabels>'), "model_score_threshold"),
        "toName to nothing": (config('<RectangleLabels name="label" toName="ghost"><Label value="Cat"/>'
                                    '</RectangleLabels>'), "not an <Image>"),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with a few bytes of image data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
