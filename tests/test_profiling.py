"""Face profiling on real AFLW2000-3D faces: label consistency with the rendered face, |yaw| grows, few
holes, determinism; and the rasteriser on hand-made meshes."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from r3fa.crop import crop_image
from r3fa.labels import landmarks_in_crop
from r3fa.params import compose, pose_degrees
from r3fa.profiling import profile_face, synthesize
from r3fa.profiling.raster import rasterize
from r3fa.profiling.rotate import MAX_YAW_DEG, applied_yaw_increment
from r3fa.readers import iter_aflw2000, label_landmarks, load_source_sample
from r3fa.records import DATASET_CONVENTION

# a near-frontal face, one turned about 50 degrees, one about 40 with a hand at the face
FACES = ("image00002", "image00006", "image00318")


@pytest.fixture(scope="module")
def bases(aflw2000_dir):
    items = {item.key: item for item in iter_aflw2000(aflw2000_dir)}
    return {name: load_source_sample(items[f"aflw2000_3d_{name}"]) for name in FACES}


def _profile(base, increment):
    return profile_face(base.image, base.image_affine, base.shape, base.exp, increment)


@pytest.mark.parametrize("name", FACES)
def test_label_landmarks_sit_where_the_rendered_face_shows_them(bases, name):
    """Forward-project the source label's landmarks through the rendered correspondence: the output pixel
    that samples a landmark's source position must be where the new label puts that landmark."""
    base = bases[name]
    source_landmarks = label_landmarks(base.image_affine, base.shape, base.exp)  # (2, 68) source image
    face = _profile(base, 30.0)
    rows, cols = np.nonzero(face.face_pixels)
    distance, nearest = cKDTree(face.source_xy[rows, cols]).query(source_landmarks.T)
    source_px_per_crop_px = (face.roi[2] - face.roi[0]) / face.crop.shape[0]
    matched = (distance < source_px_per_crop_px) & (np.arange(68) >= 17)  # inner landmarks shown in the output
    assert matched.sum() >= 15
    error = np.hypot(cols[nearest] - face.landmarks[0], rows[nearest] - face.landmarks[1])[matched]
    assert np.median(error) < 1.0, error


@pytest.mark.parametrize("name", FACES)
def test_yaw_magnitude_grows_and_label_is_self_consistent(bases, bfm68, name):
    base = bases[name]
    face = _profile(base, 20.0)
    old_yaw, new_yaw = base.pose_deg[1], pose_degrees(face.params)[1]
    assert abs(new_yaw) == pytest.approx(min(abs(old_yaw) + 20.0, MAX_YAW_DEG), abs=0.5)
    assert np.sign(face.yaw_increment) == np.sign(old_yaw)
    expected = landmarks_in_crop(bfm68, face.params, DATASET_CONVENTION)[:2]
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-3)
    assert face.crop.shape == (120, 120, 3) and face.crop.dtype == np.uint8


@pytest.mark.parametrize("name", FACES)
def test_few_holes_and_a_continuous_background(bases, name):
    face = _profile(bases[name], 20.0)
    assert face.hole_fraction < 0.1
    assert face.face_pixels.sum() > 0.25 * face.face_pixels.size
    assert (face.source_xy != 0).any(axis=-1).all()  # every output pixel is covered by some triangle


def test_a_near_frontal_face_turns_the_way_the_increment_says(bases):
    base = bases["image00002"]
    assert _profile(base, -25.0).yaw_increment == pytest.approx(-25.0)
    assert _profile(base, 25.0).yaw_increment == pytest.approx(25.0)


@pytest.mark.parametrize("name", FACES)
def test_a_zero_increment_reproduces_the_plain_crop(bases, name):
    """With no rotation the correspondence is the identity: the render equals `crop_image` of its roi (up to
    the anti-aliasing filter, so compared after a blur)."""
    base = bases[name]
    face = _profile(base, 0.0)
    assert face.yaw_increment == 0.0 and face.hole_fraction < 0.01

    def blur(image):
        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 2.0)

    assert np.abs(blur(face.crop) - blur(crop_image(base.image, face.roi))).mean() < 1.5


def test_deterministic(bases):
    first, second = _profile(bases["image00006"], 35.0), _profile(bases["image00006"], 35.0)
    np.testing.assert_array_equal(first.crop, second.crop)
    np.testing.assert_array_equal(first.params, second.params)


def test_views_from_a_cached_source_geometry_equal_fresh_ones(bases):
    """A source's views share its cached view-independent geometry: the same bytes as with a cold cache, and
    nobody can change the shared arrays."""
    base = bases["image00318"]
    synthesize._cached_source_geometry.cache_clear()
    cold = [_profile(base, step) for step in (10.0, 30.0)]  # the first computes the geometry, the second reuses it
    synthesize._cached_source_geometry.cache_clear()
    warm = [_profile(base, step) for step in (30.0, 10.0)][::-1]
    for first, second in zip(cold, warm):
        np.testing.assert_array_equal(first.crop, second.crop)
        np.testing.assert_array_equal(first.params, second.params)
        assert first.hole_fraction == second.hole_fraction
    geometry = synthesize.source_geometry(compose(base.image_affine, base.shape, base.exp))
    with pytest.raises(ValueError, match="read-only"):
        geometry.start_xyz[0, 0] = 0.0


def test_rasteriser_tiles_a_square_without_cracks_or_overlaps():
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    raster = rasterize(xy, np.zeros(4), np.array([[0, 1, 2], [1, 3, 2]]), 12, 12)
    assert raster.covered[:11, :11].all() and not raster.covered[11].any() and not raster.covered[:, 11].any()
    np.testing.assert_allclose(raster.bary.sum(-1)[raster.covered], 1.0, atol=1e-5)
    np.testing.assert_allclose(raster.interpolate(xy, np.array([[0, 1, 2], [1, 3, 2]]))[4, 7], [7.0, 4.0], atol=1e-4)


def test_rasteriser_keeps_the_closest_triangle_and_the_higher_layer():
    xy = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]] * 2)
    z = np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    triangles = np.array([[0, 1, 2], [3, 4, 5]])
    assert rasterize(xy, z, triangles, 8, 8).triangle[1, 1] == 1  # closer (larger z) wins
    assert rasterize(xy, z, triangles, 8, 8, layer=np.array([1, 0])).triangle[1, 1] == 0  # layer beats depth


def _reference_raster(xy, z, triangles, height, width, layer):
    """Per pixel, per triangle: exact (rational) barycentric coordinates of the pixel centre; the inside
    triangle of the highest (layer, depth) wins. Also which pixels lie within 1e-4 of some triangle's edge
    (the rasteriser's 1e-5 slack may count them in or out)."""
    triangle = np.full((height, width), -1)
    bary = np.zeros((height, width, 3))
    near_edge = np.zeros((height, width), bool)
    points = [(Fraction(x), Fraction(y)) for x, y in xy]
    for row in range(height):
        for col in range(width):
            best = None
            for t, (i, j, k) in enumerate(triangles):
                (ax, ay), (bx, by), (cx, cy) = points[i], points[j], points[k]
                det = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
                if det == 0:
                    continue
                lb = ((col - ax) * (cy - ay) - (row - ay) * (cx - ax)) / det
                lc = ((bx - ax) * (row - ay) - (by - ay) * (col - ax)) / det
                weights = (1 - lb - lc, lb, lc)
                near_edge[row, col] |= min(abs(w) for w in weights) < Fraction(1, 10_000)
                if min(weights) >= 0:
                    depth = sum(w * Fraction(z[v]) for w, v in zip(weights, (i, j, k)))
                    if best is None or (layer[t], depth) > best[0]:
                        best = ((layer[t], depth), t, weights)
            if best is not None:
                triangle[row, col], bary[row, col] = best[1], [float(w) for w in best[2]]
    return triangle, bary, near_edge


def test_rasteriser_matches_an_exact_per_pixel_reference():
    """Large, thin, overlapping, partly outside and degenerate triangles, with layers: coverage, the winning
    triangle and its barycentric coordinates agree with exact arithmetic at every pixel not on an edge."""
    xy = np.array(
        [[-3.3, 1.7], [21.6, 4.2], [5.1, 18.9], [2.2, 2.6], [13.7, 3.1], [9.4, 12.8], [17.0, -4.0],
         [25.5, 16.3], [11.2, 9.9], [0.4, 15.5], [3.6, 16.1], [19.7, 17.2], [6.0, 6.0], [8.0, 8.0], [10.0, 10.0]]
    )
    z = np.array([0.0, 1.0, 2.0, 5.0, 3.0, 4.0, -1.0, 6.0, 0.5, 1.0, 1.0, 1.0, 9.0, 9.0, 9.0])
    triangles = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14], [1, 7, 11]])
    layer = np.array([0, 1, 1, 0, 2, 0])  # triangle 4 is degenerate (collinear): it never wins
    height, width = 20, 24
    expected, expected_bary, near_edge = _reference_raster(xy, z, triangles, height, width, layer)
    raster = rasterize(xy, z, triangles, height, width, layer)
    assert near_edge.mean() < 0.05 and (expected >= 0).mean() > 0.5
    clear = ~near_edge
    np.testing.assert_array_equal(raster.triangle[clear], expected[clear])
    np.testing.assert_allclose(raster.bary[clear], expected_bary[clear], atol=1e-5)
    assert not (raster.triangle == 4).any()
    shown = clear & (expected >= 0)
    exact_xy = np.einsum("pk,pkc->pc", expected_bary[shown], xy[triangles[expected[shown]]])
    np.testing.assert_allclose(raster.interpolate(xy, triangles)[shown], exact_xy, atol=1e-3)


@pytest.mark.parametrize(
    ("yaw", "increment", "applied"),
    [(30.0, 20.0, 20.0), (-30.0, 20.0, -20.0), (2.0, -20.0, -20.0), (80.0, 20.0, 9.0), (89.0, 10.0, 0.0)],
)
def test_increments_only_ever_increase_abs_yaw(yaw, increment, applied):
    assert applied_yaw_increment(yaw, increment) == pytest.approx(applied)
