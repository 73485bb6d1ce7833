"""Decoding at half size (issue 15): a source JPEG none of whose crops samples it more finely than every second
pixel is decoded at half size (`MixConfig.half_size_decode`). The decode and the crop's pixel mapping are
checked exactly where they can be; a build with it changes only the pixels of the halved sources' crops, by
little, never a label; a source with a face-profiling view keeps its full decode."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipelines.build import build_shards
from r3fa.io import decode_scaled, read_scaled_image
from r3fa.readers import CropTransform, sampling_steps, warp_crop


def test_a_jpeg_of_even_size_is_decoded_at_half_size_when_asked(aflw2000_dir: Path) -> None:
    path = aflw2000_dir / "image00002.jpg"
    whole, half = read_scaled_image(path), read_scaled_image(path, half_size=True)
    assert (whole.step, whole.pixels.shape) == (1, (450, 450, 3))
    assert (half.step, half.pixels.shape) == (2, (225, 225, 3))
    np.testing.assert_array_equal(half.pixels, cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_REDUCED_COLOR_2))


@pytest.mark.parametrize("extension, size", [(".jpg", (451, 450)), (".jpg", (450, 449)), (".png", (450, 450))])
def test_other_images_are_decoded_whole(extension: str, size: tuple[int, int]) -> None:
    """An odd side would have no exact half-size frame; other formats have no scaled decoding."""
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    image = decode_scaled(cv2.imencode(extension, pixels)[1].tobytes(), half_size=True)
    assert (image.step, image.pixels.shape) == (1, (*size, 3))


def test_a_crop_of_the_half_size_image_samples_the_same_points() -> None:
    """On a linear ramp, which bilinear sampling and 2x2 averaging both reproduce exactly, the crop of the
    half-size image through the full-size transform (`warp_crop(..., step=2)`) equals the full image's crop:
    the step's scale and its half-pixel offset are right. A turned, flipped, shrunk crop inside the image."""
    y, x = np.mgrid[0:450, 0:450].astype(np.float32)
    full = np.stack([0.2 * x + 0.3 * y, 0.4 * x - 0.1 * y + 50, 0.05 * x + 0.45 * y], axis=-1)
    half = cv2.resize(full, (225, 225), interpolation=cv2.INTER_AREA)  # each pixel the mean of a 2x2 block
    angle, scale = np.radians(25.0), 1 / 2.3
    linear = scale * np.array([[-np.cos(angle), np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    transform = CropTransform(np.concatenate([linear, (np.array([60.0, 60.0]) - linear @ [225.0, 225.0])[:, None]], 1))
    assert abs(sampling_steps(transform.matrix[None])[0] - 2.3) < 1e-9
    np.testing.assert_allclose(warp_crop(half, transform, step=2), warp_crop(full, transform), atol=2e-3)


def test_sampling_steps_are_the_finest_step_in_any_direction() -> None:
    plain = CropTransform.from_roi(np.array([10.0, 20.0, 250.0, 260.0]))  # a 240-pixel roi onto 120 pixels
    turned = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]) @ np.diag([-1.0, 1.0])
    matrices = np.stack([plain.matrix,
                         np.concatenate([turned @ plain.matrix[:, :2], plain.matrix[:, 2:]], 1),
                         np.array([[1 / 3, 0.0, 0.0], [0.0, 1 / 2, 0.0]])])  # fmt: skip
    np.testing.assert_allclose(sampling_steps(matrices), [2.0, 2.0, 2.0])


def _members(folder: Path) -> dict[str, bytes]:
    members = {}
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members.update((member.name, tar.extractfile(member).read()) for member in tar.getmembers())
    return members


def _grey(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)


def test_a_build_changes_only_the_pixels_of_the_halved_sources(data_root: Path, tmp_path: Path) -> None:
    source = {"kind": "aflw2000_3d", "root": str(data_root / "aflw2000_3d"), "limit": 12}
    members = {}
    for half_size in (True, False):
        mix = {"name": "half", "sources": [source], "augmentation": {"copies_per_image": 2.5},
               "synthesis": {"count": 5}, "seed": 3, "samples_per_shard": 16, "half_size_decode": half_size}  # fmt: skip
        config = tmp_path / f"{half_size}.yaml"
        config.write_text(yaml.safe_dump(mix))
        build_shards(config, tmp_path / str(half_size), workers=0)
        members[half_size] = _members(tmp_path / str(half_size))
    halved, whole = members[True], members[False]
    assert halved.keys() == whole.keys()
    labels = [name for name in whole if not name.endswith(".jpg")]
    assert all(halved[name] == whole[name] for name in labels)  # labels, landmarks and summaries
    sources = {name: name.split(".")[0].rsplit("_", 1) for name in whole}  # (item key, "a<copy>" or "p<view>")
    profiled = {item for item, view in sources.values() if view.startswith("p")}  # decoded whole for the view
    changed = {name for name in whole if name.endswith(".jpg") and halved[name] != whole[name]}
    assert changed and len(changed) < sum(name.endswith(".jpg") for name in whole)
    assert profiled and not {sources[name][0] for name in changed} & profiled
    for name in changed:
        assert np.abs(_grey(halved[name]) - _grey(whole[name])).mean() < 4.0, name
