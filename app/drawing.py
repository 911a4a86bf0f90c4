"""The drawing pad's guards: images are sized from their headers before anything decodes them.

:func:`cap_decoded_pixels` caps what PIL decodes in the whole process; :func:`check_image_size`
reads an image's size from its header; :func:`guard_drawing` wraps a ``gr.Sketchpad`` so that a
value or blob with more images, or larger ones, than the canvas needs is refused with a message
(a flat 8000 x 8000 PNG is a few hundred kB and gigabytes once decoded).
"""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings
from typing import Any

import gradio as gr

from app.events import refusing
from app.validation import InputError

log = logging.getLogger("flowmaps.app")

#: Picks the drawing pad's brush once the pad is shown, so that it takes strokes at once (gradio's
#: pad starts with no tool and ignores strokes until one is picked).
PICK_BRUSH_JS = """(choice) => {
  if (choice !== "draw") return;
  let tries = 0;
  const pick = () => {
    const b = document.querySelector('#draw-pad button[aria-label="Brush"]');
    if (b && b.offsetParent !== null) {
      if (!b.classList.contains("highlight")) b.click();  // "highlight": the picked tool
    } else if (++tries < 40) {
      setTimeout(pick, 100);
    }
  };
  pick();
}"""
#: The drawing pad's canvas, in pixels (square).
CANVAS = 320
#: Largest side of an image the pad's value may hold: the canvas at up to 4 device pixels per
#: CSS pixel. Anything larger is refused from its header, before gradio decodes it.
DRAW_MAX_SIDE = 4 * CANVAS
#: Most images in one pad value (background, composite and layers together).
DRAW_MAX_IMAGES = 10
#: Bytes of drawing blobs (the browser's way of sending the pad) held at once between their
#: upload and the event that reads them; the oldest are dropped beyond it.
BLOB_BUDGET = 64 << 20


def _pad_images(pad: gr.ImageEditor, payload: Any) -> list[Any]:
    """The files (paths) or blobs (bytes) of a sketch-pad value, without opening any."""
    pid = getattr(payload, "id", None)
    if pid is not None:
        cached = pad.blob_storage.get(pid)
        items = [cached.background, *cached.layers, cached.composite] if cached is not None else []
    else:
        items = [getattr(payload, "background", None), *(getattr(payload, "layers", None) or [])]
        items.append(getattr(payload, "composite", None))
    return [getattr(it, "path", it) for it in items if it is not None]


def guard_drawing(pad: gr.ImageEditor, max_side: int, max_images: int, budget: int = BLOB_BUDGET) -> gr.ImageEditor:
    """Refuse sketch-pad values whose images exceed what the canvas needs, before they are decoded.

    The pad's own preprocess decodes every image it is sent (background, layers, composite),
    whatever its size: a flat 8000 x 8000 PNG of a few hundred kB costs gigabytes. This reads each
    image's size from its header first and refuses more than ``max_images`` images or any side
    above ``max_side`` with a message (:func:`app.events.refusing`: raised, or handed to the
    event's validator). Blobs (the browser's upload path) are checked on arrival,
    and at most ``budget`` bytes of them are held. The checks are instance attributes, so nothing
    may update the pad (gradio would give the session an unchecked copy).
    """
    preprocess, accept_blobs = pad.preprocess, pad.accept_blobs
    refused: dict[str, str] = {}  # blob id -> why its blob was not kept
    lock = threading.Lock()
    need = f"the canvas is {pad.canvas_size[0]} x {pad.canvas_size[1]}"

    reread: set[str] = set()  # blobs read once, kept for a second read (below)

    def check(payload: Any) -> Any:
        if payload is None:
            return preprocess(payload)
        pid = getattr(payload, "id", None)
        try:
            if pid is not None and pid in refused:
                raise InputError(refused.pop(pid))
            images = _pad_images(pad, payload)
            if len(images) > max_images:
                raise InputError(f"drawing: {len(images)} images in one value; at most {max_images} are accepted")
            for image in images:
                check_image_size(image, "drawing", max_side, max_side, need)
        except InputError:
            if pid is not None:
                pad.blob_storage.pop(pid, None)
            raise
        kept = pad.blob_storage.get(pid) if pid is not None else None
        value = preprocess(payload)  # gradio's pad drops a blob once it has read it
        # An event with a validator reads its inputs twice (the validator's read, then the
        # event's), so a blob is kept for one more read; a blob read only once stays until the
        # budget below drops it.
        with lock:
            if kept is not None and pid not in reread:
                pad.blob_storage[pid] = kept
                reread.add(pid)
                while len(reread) > 1024:
                    reread.pop()
            else:
                reread.discard(pid)
        return value

    def guarded_accept(data: Any) -> Any:
        pid = str(data.data.get("id"))
        try:
            check_image_size(data.files[0][1], "drawing", max_side, max_side, need)
        except (InputError, IndexError, TypeError) as err:
            pad.blob_storage.pop(pid, None)
            refused[pid] = str(err) if isinstance(err, InputError) else "drawing: the upload held no image"
            while len(refused) > 256:
                refused.pop(next(iter(refused)))
            log.info("drawing blob refused: %s", refused[pid])
            return None
        with lock:  # the component server runs on several threads
            out = accept_blobs(data)
            store = pad.blob_storage
            entries = list(store.items())  # oldest first
            sizes = [sum(len(b or b"") for b in (v.background, v.composite, *v.layers)) for _, v in entries]
            total = sum(sizes)
            for (k, _), size in zip(entries, sizes):
                if total <= budget or k == pid:
                    break
                total -= size
                store.pop(k, None)
        return out

    guarded_accept._is_server_fn = True  # what gradio's component server looks for
    pad.preprocess = refusing(pad, check)
    pad.accept_blobs = guarded_accept
    return pad


#: Image formats the server opens: the drawing pad sends PNG; an API client may send JPEG or WebP.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


def cap_decoded_pixels(max_pixels: int) -> None:
    """Make PIL refuse, for the whole process, any image of more than ``max_pixels`` pixels.

    PIL reads the size from the file's header when it opens it and raises
    ``DecompressionBombError`` above twice ``Image.MAX_IMAGE_PIXELS`` before decoding anything,
    so the threshold is set to half the cap; its warning between the two is silenced (the
    app's own per-input checks, :func:`check_image_size`, are the tighter rule)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(1, int(max_pixels) // 2)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_image_size(source: Any, field: str, max_width: int, max_height: int, need: str = "") -> tuple[int, int]:
    """The ``(width, height)`` of an image file or bytes, read from its header without decoding it.

    Args:
        source: a path, or the file's bytes.
        field: the input's name, for messages.
        max_width, max_height: the largest size accepted, in pixels.
        need: why that is enough (ends the message), e.g. "the canvas is 320 x 320".

    Raises:
        InputError: for a file that is not a PNG, JPEG or WebP image, that PIL's global pixel
            cap refuses (:func:`cap_decoded_pixels`), or that is larger than the limits.
    """
    from PIL import Image, UnidentifiedImageError

    fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    png = _png_size(fp)  # a PNG's size from its IHDR chunk, before PIL's own pixel cap can refuse it
    if png is not None:
        _refuse_larger(png, field, max_width, max_height, need)
    try:
        with Image.open(fp, formats=IMAGE_FORMATS) as im:  # reads the header only
            width, height = im.size
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # PIL names the size it refused
        size = f" ({int(found.group(1)):,} pixels)" if found else ""
        raise InputError(
            f"{field}: the image{size} has more pixels than the server decodes ({2 * Image.MAX_IMAGE_PIXELS:,}); "
            f"at most {max_width} x {max_height} is accepted. Draw on the pad, or send a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"{field}: not a readable PNG, JPEG or WebP image") from None
    _refuse_larger((width, height), field, max_width, max_height, need)
    return width, height


def _png_size(fp: Any) -> tuple[int, int] | None:
    """(width, height) from a PNG's signature and IHDR chunk (the first 24 bytes), else None."""
    try:
        if hasattr(fp, "read"):
            pos = fp.tell()
            head = fp.read(24)
            fp.seek(pos)
        else:
            with open(fp, "rb") as f:
                head = f.read(24)
    except (OSError, TypeError, ValueError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _refuse_larger(size: tuple[int, int], field: str, max_width: int, max_height: int, need: str) -> None:
    width, height = size
    if width > max_width or height > max_height:
        why = f" ({need})" if need else ""
        raise InputError(
            f"{field}: the image is {width} x {height} pixels; at most {max_width} x {max_height} is "
            f"accepted{why}. Draw on the pad, or send a smaller image"
        )
