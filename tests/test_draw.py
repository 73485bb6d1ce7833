"""Contact sheets: a caption stays inside its own cell, however long it is."""

from __future__ import annotations

import numpy as np

from r3fa.draw import contact_sheet


def test_a_long_caption_never_runs_into_the_next_cell() -> None:
    tiles = [np.zeros((120, 120, 3), np.uint8)] * 2
    long = "image00002 a caption far wider than its 120-pixel cell: NME 12.3% yaw +45"
    sheet = contact_sheet(tiles, ncols=2, captions=[long, ""])
    strip = sheet[120:]  # the caption row under both cells
    assert strip[:, :120].any(), "the first caption is drawn"
    assert not strip[:, 120:].any(), "nothing of it reaches the second cell"


def test_a_caption_that_fits_is_drawn_whole_at_the_sheet_font_size() -> None:
    tiles = [np.zeros((400, 400, 3), np.uint8)]
    short, cut = (contact_sheet(tiles, ncols=1, captions=[text])[400:] for text in ("yaw +45", "yaw +45 and more"))
    np.testing.assert_array_equal(short[:, :60], cut[:, :60])  # same scale: the common prefix is drawn the same
