"""Labelling guidelines from ``--guidelines FILE``: Markdown, with example images beside the file.

An image reference ``![rails without a train](examples/rails.jpg)`` is shown when the file lies
inside the guidelines' folder and is a PNG, JPEG, GIF or WebP; it travels as a ``data:`` URI like
every other image of the app. Anything else in the Markdown is shown as Markdown (no raw HTML).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from curate.ingest.image_files import contained_file

IMAGE_REF = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
IMAGE_TYPES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".webp": "webp"}
MAX_IMAGE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    """A piece of the guidelines: Markdown text, or an example image as an ``<img>`` tag."""

    markdown: str = ""
    image_html: str = ""


def example_image_html(folder: Path, reference: str, alt: str) -> str | None:
    """An ``<img>`` for an example image inside ``folder``, or None if it may not be shown."""
    path = contained_file(folder.resolve(), reference)
    kind = IMAGE_TYPES.get(Path(reference).suffix.lower())
    if path is None or kind is None or path.stat().st_size > MAX_IMAGE_BYTES:
        return None
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure class="hardood-example"><img src="data:image/{kind};base64,{data}" '
        f'alt="{html.escape(alt, quote=True)}" style="max-width: 100%; max-height: 16rem">'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def load_guidelines(path: str | Path) -> list[Part]:
    """The guidelines split into Markdown text and example images, in order.

    A reference to an image that cannot be shown (missing, outside the folder, not an image)
    stays in the text as its alt text with a note, so the lead sees what to fix.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    parts: list[Part] = []
    position = 0
    for match in IMAGE_REF.finditer(text):
        parts.append(Part(markdown=text[position : match.start()]))
        alt, reference = match.group(1), match.group(2)
        shown = example_image_html(path.parent, reference, alt)
        if shown is None:
            parts.append(Part(markdown=f"*{alt} (example image `{reference}` not shown)*"))
        else:
            parts.append(Part(image_html=shown))
        position = match.end()
    parts.append(Part(markdown=text[position:]))
    return [p for p in parts if p.image_html or p.markdown.strip()]
