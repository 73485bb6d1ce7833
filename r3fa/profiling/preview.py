"""A contact sheet of a source crop and its face-profiling views, landmarks drawn, for looking at.

Pure: returns the sheet as an image; the CLI (`r3fa synth preview`) writes it.
"""

from __future__ import annotations

import cv2
import numpy as np

from r3fa.crop import CROP_SIZE, crop_image, image_to_crop
from r3fa.params import pose_degrees
from r3fa.profiling.synthesize import profile_face
from r3fa.readers import BaseSample

TILE = 240  # crops are shown at twice their size


def _tile(crop: np.ndarray, landmarks: np.ndarray, caption: str, holes: np.ndarray | None = None) -> np.ndarray:
    tile = crop.copy()
    if holes is not None:
        tile[holes] = (0.5 * tile[holes] + (0, 0, 127)).astype(np.uint8)
    scale = TILE / crop.shape[0]
    tile = cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_LINEAR)
    for x, y in np.rint(np.asarray(landmarks[:2]).T * scale).astype(int):
        cv2.circle(tile, (int(x), int(y)), 2, (0, 255, 0), -1, cv2.LINE_AA)
    cv2.putText(tile, caption, (4, TILE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def preview_sheet(base: BaseSample, yaw_steps: list[float], show_holes: bool = False) -> np.ndarray:
    """One row: the source crop with its annotation landmarks, then one synthesised view per yaw step.

    Args:
        base: the source sample.
        yaw_steps: yaw increments in degrees.
        show_holes: tint the face pixels counted as holes red.

    Returns:
        The sheet, BGR uint8, `TILE` pixels high.
    """
    source = crop_image(base.image, base.roi, CROP_SIZE)
    tiles = [_tile(source, image_to_crop(base.landmarks, base.roi), f"source yaw {base.pose_deg[1]:+.0f}")]
    for step in yaw_steps:
        face = profile_face(base.image, base.image_affine, base.shape, base.exp, step)
        holes = face.holes if show_holes else None
        yaw = pose_degrees(face.params)[1]
        tiles.append(_tile(face.crop, face.landmarks, f"yaw {yaw:+.0f} holes {face.hole_fraction:.2f}", holes))
    return np.concatenate(tiles, axis=1)
