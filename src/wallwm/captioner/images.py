"""Image helpers for prompts."""

from __future__ import annotations

import numpy as np


def tile_jpegs(jpegs: list[bytes], columns: int = 3) -> bytes:
    """Tile JPEG images row by row (``columns`` per row) into one JPEG."""
    import cv2

    imgs = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    imgs = [i for i in imgs if i is not None]
    if not imgs:
        raise ValueError("no decodable images to tile")
    h = max(i.shape[0] for i in imgs)
    w = max(i.shape[1] for i in imgs)
    blank = np.zeros((h, w, 3), np.uint8)
    padded = [
        cv2.copyMakeBorder(i, 0, h - i.shape[0], 0, w - i.shape[1], cv2.BORDER_CONSTANT)
        for i in imgs
    ]
    padded += [blank] * (-len(padded) % columns)
    rows = [np.hstack(padded[r : r + columns]) for r in range(0, len(padded), columns)]
    ok, buf = cv2.imencode(".jpg", np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("could not encode the tiled image")
    return bytes(buf.tobytes())
