"""URLs as they are shown: one home for the two ways a task's URL is cut down for people.

`short_url` makes a URL safe to show anywhere (logs, failure notes, messages): no query string (presigned
signatures, tokens), no data of a data: URI. `shorten_url` makes a URL fit a table cell on the status
page (its file name kept; the full one stays in the tooltip).

Both summarise a data: URI as its header and length, each in its own words, on purpose: `short_url`'s goes
inside a sentence ("the image of a data: URI (data:image/png;base64, 26 characters) is not valid base64"),
`shorten_url`'s stands alone in a narrow cell ("data:image/png;base64,… (2,222 chars)"). Tests pin both
texts (tests/labelstudio/test_media_images.py, tests/backend/app/test_status_page.py), so one shared
description would change a message users see.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse, urlsplit

# A URL longer than this is shown shortened on the status page (the full one stays in the tooltip).
SHORT_URL_CHARS = 56


def short_url(url: str) -> str:
    """A URL safe to show: no query string (presigned signatures, tokens), no data of a data: URI."""
    if url[:5].lower() == "data:":
        header = url.split(",", 1)[0]
        header = header if len(header) <= 40 else header[:37] + "..."
        return f"a data: URI ({header}, {len(url):,} characters)"
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        text = f"{parsed.scheme}://{parsed.netloc.rsplit('@', 1)[-1]}{parsed.path}"
    else:
        text = url.split("?", 1)[0]
    local = parse_qs(parsed.query).get("d") if parsed.path.endswith("/data/local-files/") else None
    if local:  # Label Studio Local Storage: `d` is the file's path, not a secret, and the only thing to name
        text += f"?d={local[-1]}"
    return text if len(text) <= 200 else text[:197] + "..."


def shorten_url(url: str, limit: int = SHORT_URL_CHARS) -> str:
    """A long URL as `host/…/name.jpg?…` (its file name kept); a data: URI as its media type and length."""
    if url.startswith("data:"):
        return f"{url.split(',', 1)[0][:40]},… ({len(url):,} chars)"
    parts = split_url(url)
    if len(url) <= limit or parts is None:
        return url if len(url) <= limit else url[: limit - 1] + "…"
    segments = [s for s in parts.path.split("/") if s]
    head = (parts.netloc or (f"/{segments[0]}" if segments else ""))[: limit // 3]
    name = segments[-1] if segments and not parts.path.endswith("/") else ""
    if not name:  # e.g. /data/local-files/?d=images/x.jpg: the file is named by the query
        name = "?" + parts.query
    elif parts.query:
        name += "?…"
    if len(name) > limit // 2:
        return f"{head}/…{name[-(limit // 2):]}"
    return f"{head}/…/{name}"


def split_url(url: str):
    """urlsplit, or None for a string it refuses (e.g. an unclosed IPv6 bracket): URLs come from users."""
    try:
        return urlsplit(url)
    except ValueError:
        return None
