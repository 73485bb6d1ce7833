"""Face profiling of one sample: source image + image-frame label -> a rotated 120x120 sample and its label.

Steps (DESIGN §6): pose the face mesh at the image pose; find its outline by landmark marching; mesh the
background (anchors, Delaunay) and give the anchors depth; rotate face and anchors about the face centroid;
re-place the anchors; then render by correspondence. Rendering happens directly in the *output* crop
(the roi of the new 68 landmarks, 120x120): the rotated mesh is z-buffered there, and each output pixel's
barycentric coordinates in its triangle map it back to a source position, sampled with `cv2.remap`. The
source is first shrunk (area filter) to about the output's resolution so that the sampling does not alias.

Holes: output face pixels whose triangle was hidden in the source (self-occlusion) or whose source position
falls outside the image have no true texture; their share of the face is `hole_fraction`.

Everything up to the rotation depends on the source's label only, not on the view: the posed mesh, the
source z-buffer and visibility, the background mesh, the anchor depths and the factorised anchor-placement
system (`SourceGeometry`). It is computed once per label and kept in a small per-process cache keyed by the
label's bytes, so the several views of one source, made one after the other, share it; a cached result is
the same value a fresh computation gives (a pure function of the label).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from r3fa.crop import CROP_SIZE, image_to_crop, roi_from_landmarks
from r3fa.labels import crop_frame_params, landmarks_in_crop
from r3fa.morphable import posed_vertices
from r3fa.params import compose
from r3fa.profiling.anchors import BackgroundMesh, EdgeLeastSquares, mesh_background
from r3fa.profiling.contour import march_contour
from r3fa.profiling.mesh import load_face_mesh
from r3fa.profiling.raster import Raster, rasterize
from r3fa.profiling.rotate import profile_rotation, rotate_about
from r3fa.records import DATASET_CONVENTION

REGION_SCALE = 2.0  # working region (the meshed "image") = this x the source roi side, same centre
VISIBLE_TOLERANCE = 0.04  # occlusion test slack, as a fraction of the crop side
ANTI_ALIAS_RATIO = 1.25  # shrink the source first when it is this much finer than the output
CACHED_SOURCES = 4  # source geometries kept per process (a source's views come one after the other)


@dataclass(frozen=True)
class ProfiledFace:
    """A synthesised sample: the crop and its label in `DATASET_CONVENTION`."""

    crop: np.ndarray  # (size, size, 3) uint8 BGR
    roi: np.ndarray  # (4,) roi of the new face in the source image frame
    params: np.ndarray  # (62,) float32 crop-frame label
    landmarks: np.ndarray  # (2, 68) float32 crop-frame landmarks of the label
    image_affine: np.ndarray  # (3, 4) new image-frame pose
    yaw_increment: float  # applied signed yaw change, degrees
    hole_fraction: float  # share of rendered face pixels without source texture
    source_xy: np.ndarray  # (size, size, 2) float32 source image position of every output pixel
    face_pixels: np.ndarray  # (size, size) bool: output pixels covered by the face mesh
    holes: np.ndarray  # (size, size) bool: face pixels without source texture (and uncovered pixels)


def _source_face(
    xy: np.ndarray, z: np.ndarray, triangles: np.ndarray, roi: np.ndarray, size: int
) -> tuple[Raster, np.ndarray]:
    """The face z-buffer of the source in the crop frame of `roi`, and `(T,)` bool: which face triangles
    the source image shows with texture.

    A triangle is seen if it faces the camera (its projected winding matches the face's usual one) and is not
    occluded: its centroid's depth is within `VISIBLE_TOLERANCE` (of the crop side) of the face z-buffer,
    rendered at crop resolution, at the centroid's pixel.
    """
    crop_xyz = image_to_crop(np.vstack([xy.T, z[None]]), roi, size)
    raster = rasterize(crop_xyz[:2].T, crop_xyz[2], triangles, size, size)
    ids = np.ascontiguousarray(triangles.T)  # (3, T): corner k of every triangle
    (ax, bx, cx), (ay, by, cy), (az, bz, cz) = (np.take(coordinate, ids) for coordinate in crop_xyz)
    winding = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    front = np.sign(winding) == np.sign(np.median(winding))
    col = np.clip(np.rint((ax + bx + cx) / 3).astype(int), 0, size - 1)
    row = np.clip(np.rint((ay + by + cy) / 3).astype(int), 0, size - 1)
    centroid_z = (az + bz + cz) / 3
    return raster, front & (centroid_z >= raster.depth[row, col] - VISIBLE_TOLERANCE * size)


def _anchor_depth(
    start_xyz: np.ndarray, n_face: int, edges: np.ndarray, source: Raster, roi: np.ndarray, size: int
) -> np.ndarray:
    """Depth of every mesh vertex: face vertices keep theirs, anchors on the face take the face z-buffer's,
    the rest come from the least-squares solve that keeps depth differences along edges small."""
    crop_xyz = image_to_crop(start_xyz.T, roi, size)
    col, row = np.rint(crop_xyz[0]).astype(int), np.rint(crop_xyz[1]).astype(int)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    on_face = np.zeros(len(start_xyz), bool)
    on_face[inside] = source.covered[row[inside], col[inside]]
    known = on_face | (np.arange(len(start_xyz)) < n_face)
    values = start_xyz[:, 2:].copy()
    crop_depth = np.where(on_face, source.depth[np.clip(row, 0, size - 1), np.clip(col, 0, size - 1)], 0.0)
    z_scale = ((roi[2] - roi[0]) + (roi[3] - roi[1])) / (2 * size)  # crop depth -> image depth
    values[n_face:, 0] = np.where(on_face[n_face:], crop_depth[n_face:] * z_scale, 0.0)
    return EdgeLeastSquares(edges, known).solve(values, np.zeros((len(edges), 1)))[:, 0]


@dataclass(frozen=True)
class SourceGeometry:
    """What face profiling needs of a source before the rotation (DESIGN §6 steps 1-2): a function of its
    label alone, shared by all its views."""

    seen: np.ndarray  # (T,) bool: face triangles the source shows with texture
    background: BackgroundMesh
    start_xyz: np.ndarray  # (V, 3) [face vertices | anchors] source positions, anchors with their solved depth
    centre: np.ndarray  # (3,) face centroid: the rotation's fixed point
    placement: EdgeLeastSquares  # ring anchors from the edges' 2D vectors, face and border vertices fixed
    edge_vectors: np.ndarray  # (E, 2) source 2D vector of every background edge: the placement's targets


def source_geometry(params: np.ndarray, size: int = CROP_SIZE) -> SourceGeometry:
    """The view-independent part of face profiling for a source with image-frame label `params` `(62,)`
    float32 (`r3fa.params.compose`), cached per process (`CACHED_SOURCES` labels)."""
    return _cached_source_geometry(np.asarray(params, np.float32).tobytes(), size)


@lru_cache(maxsize=CACHED_SOURCES)
def _cached_source_geometry(params: bytes, size: int) -> SourceGeometry:
    geometry = _compute_source_geometry(np.frombuffer(params, np.float32), size)
    for array in (geometry.seen, geometry.start_xyz, geometry.centre, geometry.edge_vectors):
        array.flags.writeable = False  # shared by the views of a source: nobody may change it
    return geometry


def _compute_source_geometry(params: np.ndarray, size: int) -> SourceGeometry:
    """Pose the mesh, z-buffer the source face, mesh the background and give the anchors depth (DESIGN §6
    steps 1-2); factorise the anchor placement of step 3, whose system does not depend on the view."""
    mesh = load_face_mesh()
    verts = mesh.pose(params)  # (3, N) image frame
    roi = roi_from_landmarks(posed_vertices(mesh.landmarks, params)[:2])
    source, seen = _source_face(verts[:2].T, verts[2], mesh.triangles, roi, size)
    centre2d, side = (roi[:2] + roi[2:]) / 2, roi[2] - roi[0]
    region = np.r_[centre2d - REGION_SCALE * side / 2, centre2d + REGION_SCALE * side / 2]
    background = mesh_background(verts[:2].T, march_contour(verts[:2].T, mesh.isolines), region)
    edges = background.edges()
    start_xyz = np.vstack([verts.T, np.c_[background.anchor_xy, np.zeros(len(background.anchor_xy))]])  # (V, 3)
    start_xyz[:, 2] = _anchor_depth(start_xyz, verts.shape[1], edges, source, roi, size)
    fixed = np.r_[np.ones(verts.shape[1], bool), background.on_border]
    return SourceGeometry(
        seen,
        background,
        start_xyz,
        verts[:, mesh.face_mask].mean(axis=1),
        EdgeLeastSquares(edges, fixed),
        start_xyz[edges[:, 0], :2] - start_xyz[edges[:, 1], :2],
    )


def _place_anchors(geometry: SourceGeometry, moved: np.ndarray) -> np.ndarray:
    """New 2D positions `(V, 2)`: face vertices where the rotation takes them, border anchors where they
    were, ring anchors by least squares so that every background edge keeps its source 2D vector."""
    background = geometry.background
    fixed_xy = np.where(geometry.placement.known[:, None], moved[:2].T, 0.0)
    fixed_xy[background.num_face_vertices :][background.on_border] = background.anchor_xy[background.on_border]
    return geometry.placement.solve(fixed_xy, geometry.edge_vectors)


def _sample(image: np.ndarray, source_xy: np.ndarray, roi_side: float, size: int) -> np.ndarray:
    """`cv2.remap` of `image` at `source_xy` `(size, size, 2)`, shrinking the source first if it is finer."""
    factor = roi_side / size
    map_x, map_y = (np.ascontiguousarray(source_xy[..., k], np.float32) for k in (0, 1))
    if factor > ANTI_ALIAS_RATIO:
        h, w = image.shape[:2]
        x0, x1 = _span_within(map_x, w, margin=(2, 3))
        y0, y1 = _span_within(map_y, h, margin=(2, 3))
        part = image[y0:y1, x0:x1]
        out_w, out_h = max(1, round(part.shape[1] / factor)), max(1, round(part.shape[0] / factor))
        image = cv2.resize(part, (out_w, out_h), interpolation=cv2.INTER_AREA)
        # pixel centres: source x -> (x - x0 + 0.5) / ratio - 0.5 in the shrunk part
        map_x = (map_x - np.float32(x0) + np.float32(0.5)) / np.float32(part.shape[1] / out_w) - np.float32(0.5)
        map_y = (map_y - np.float32(y0) + np.float32(0.5)) / np.float32(part.shape[0] / out_h) - np.float32(0.5)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _span_within(coordinate: np.ndarray, length: int, margin: tuple[int, int]) -> tuple[int, int]:
    """`[first, end)` pixel range covering `coordinate`'s values with `margin` (before, after), clipped to
    `[0, length)` and never empty."""
    first = int(np.clip(np.floor(coordinate.min()) - margin[0], 0, length - 1))
    end = int(np.clip(np.ceil(coordinate.max()) + margin[1], first + 1, length))
    return first, end


def profile_face(
    image: np.ndarray,
    image_affine: np.ndarray,
    shape: np.ndarray,
    expression: np.ndarray,
    yaw_increment_deg: float,
    pitch_increment_deg: float = 0.0,
    size: int = CROP_SIZE,
) -> ProfiledFace:
    """Rotate the face of `image` out of plane and render the new view as a `size x size` crop.

    Args:
        image: full source image, BGR uint8.
        image_affine: `(3, 4)` [sR | t] model -> image pixels of the source face (`image_frame_affine`).
        shape: 40 shape coefficients.
        expression: 10 expression coefficients.
        yaw_increment_deg: how far to turn the face further away from frontal (`rotate.applied_yaw_increment`).
        pitch_increment_deg: optional pitch change.
        size: output side in pixels.

    Returns:
        The synthesised sample (the caller decides whether `hole_fraction` is acceptable).
    """
    mesh = load_face_mesh()
    geometry = source_geometry(compose(image_affine, shape, expression), size)

    # rotation about the face centroid; anchors re-placed; the new pose and its crop
    new_linear, rotation, delta = profile_rotation(image_affine, yaw_increment_deg, pitch_increment_deg)
    moved = rotate_about(geometry.start_xyz.T, rotation, geometry.centre)  # (3, V)
    new_xy = _place_anchors(geometry, moved)
    new_translation = rotate_about(np.asarray(image_affine, np.float64)[:, 3:], rotation, geometry.centre)
    new_affine = np.concatenate([new_linear, new_translation], axis=1)
    new_roi = roi_from_landmarks(posed_vertices(mesh.landmarks, compose(new_affine, shape, expression))[:2])

    # render by correspondence in the output crop: face triangles over background over gap fillers
    background = geometry.background
    triangles = np.concatenate([mesh.triangles, background.triangles])
    layer = np.r_[np.full(len(mesh.triangles), 2), np.where(background.interior, 0, 1)]
    raster = rasterize(image_to_crop(new_xy.T, new_roi, size).T, moved[2], triangles, size, size, layer)
    source_xy = raster.interpolate(geometry.start_xyz[:, :2], triangles).astype(np.float32)
    crop = _sample(image, source_xy, new_roi[2] - new_roi[0], size)

    face_pixels = raster.covered & (raster.triangle < len(mesh.triangles))
    h, w = image.shape[:2]
    source_x, source_y = source_xy[..., 0], source_xy[..., 1]
    outside = (source_x < 0) | (source_x > np.float32(w - 1)) | (source_y < 0) | (source_y > np.float32(h - 1))
    unseen = ~geometry.seen[np.minimum(raster.triangle, len(mesh.triangles) - 1)]
    holes = (face_pixels & (unseen | outside)) | ~raster.covered
    hole_fraction = float(holes.sum() / max(face_pixels.sum(), 1))

    crop_params = crop_frame_params(new_affine, shape, expression, new_roi, DATASET_CONVENTION, size)
    landmarks = landmarks_in_crop(mesh.landmarks, crop_params, DATASET_CONVENTION)[:2].astype(np.float32)
    return ProfiledFace(
        crop, new_roi, crop_params, landmarks, new_affine, delta, hole_fraction, source_xy, face_pixels, holes
    )
