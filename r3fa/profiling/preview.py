"""A contact sheet of a source crop and its face-profiling views, landmarks drawn, for looking at.

Pure: returns the sheet as an image; the CLI (`r3fa synth preview`) writes it. Drawing is `r3fa.draw`'s.
"""

from __future__ import annotations

import numpy as np

from r3fa.crop import CROP_SIZE, crop_image, image_to_crop
from r3fa.draw import contact_sheet, draw_landmarks
from r3fa.params import pose_degrees
from r3fa.profiling.synthesize import profile_face
from r3fa.readers import BaseSample

SCALE = 2  # crops are shown at twice their size
HOLE_TINT = np.array([0, 0, 255], np.float32)


def preview_sheet(base: BaseSample, yaw_steps: list[float], show_holes: bool = False) -> np.ndarray:
    """One row: the source crop with its annotation landmarks, then one synthesised view per yaw step.

    Args:
        base: the source sample.
        yaw_steps: yaw increments in degrees.
        show_holes: tint the face pixels counted as holes red.

    Returns:
        The sheet, BGR uint8, captioned with each view's yaw and hole fraction.
    """
    source = crop_image(base.image, base.roi, CROP_SIZE)
    tiles = [draw_landmarks(source, image_to_crop(base.landmarks, base.roi), scale=SCALE, radius=2)]
    captions = [f"source yaw {base.pose_deg[1]:+.0f}"]
    for step in yaw_steps:
        face = profile_face(base.image, base.image_affine, base.shape, base.exp, step)
        crop = face.crop
        if show_holes:
            crop = crop.copy()
            crop[face.holes] = (0.5 * crop[face.holes] + 0.5 * HOLE_TINT).astype(np.uint8)
        tiles.append(draw_landmarks(crop, face.landmarks, scale=SCALE, radius=2))
        captions.append(f"yaw {pose_degrees(face.params)[1]:+.0f}, holes {face.hole_fraction:.2f}")
    return contact_sheet(tiles, ncols=len(tiles), captions=captions)
