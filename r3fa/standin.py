"""A 300W-LP-shaped stand-in tree made from AFLW2000-3D, so the `300wlp` reader and the paper's mix run at scale.

300W-LP itself is not available here (only one of its images is, in `300w_lp_sample/`), but AFLW2000-3D's
2000 images carry the same `.mat` fields. `write_standin` lays out a tree of any size with 300W-LP's layout:

```
OUT/{AFW,HELEN,IBUG,LFPW}/<subset>_<stem>_<face>_<k>.jpg|.mat     -> AFLW2000-3D's <stem>.jpg|.mat, as they are
OUT/{AFW,HELEN,IBUG,LFPW}_Flip/<same name>.jpg|.mat               -> mirror images (.standin/flip/<stem>.*)
OUT/landmarks/<subset>/<subset>_<stem>_<face>_<k>_pts.mat         -> .standin/landmarks/<stem>_pts.mat
OUT/.standin/standin.json                                         what was asked for, and whether it is complete
```

- **Names** follow 300W-LP's `<subset>_<photo>_<face>_<k>`: a *face* (an AFLW2000-3D image, `<face>` counting
  how often the tree has used it) gets several views `k` (drawn from 9..23, about the real set's 16 per photo,
  61,225 / 3,837), so a source repeats as in the real set and the reader groups a face's views into one subject.
  The plain views are spread over the four subsets in the real set's proportions (`W300LP_VIEWS`). Every view
  of a face links to the same image: the views differ in name only, not in pose.
- **Everything in the tree is a symlink.** Plain views link to the AFLW2000-3D files as they are (absolute
  links); their `.mat` keeps AFLW2000-3D's fields (`pt3d_68` and a 21-point `pt2d`, where 300W-LP has a
  68-point `pt2d`), so the reader takes the landmarks from `pt3d_68`. The side landmark file of a plain view
  (`pts_2d` (68, 2) and `pts_3d` (68, 3), both from `pt3d_68`) and the flips are small files written once per
  AFLW2000-3D image into `.standin/` and linked to (relative links; the tree can be moved).
- **Flips hold what 300W-LP's flips hold**: the mirror image and its label. A link to the un-flipped files
  would be a wrong label, so each source image with flips gets, once, a mirrored JPEG (`cv2.flip`, q95) and a
  300W-LP-format `.mat` (`mirror_annotations`): pose mirrored, the 40 + 10 coefficients refitted to the
  mirrored shape (`r3fa.landmark_symmetry.mirror_coefficients`, as the builder's mirroring augmentation
  does; the other 159 + 19 are 0), a 68-point `pt2d` (the mirrored `pt3d_68[:2]` with the iBUG symmetry
  permutation). Texture, illumination and `roi` are left out. As in 300W-LP, flipped views have no side
  landmark file. The images' pixel frame is the one the builder crops with (column j -> W - 1 - j).
  `--images N` counts flips too (300W-LP: 122,450 = 2 x 61,225): ceil(N/2) plain views and the mirror images
  of the first floor(N/2) of them (`flips=False`: N plain views, no `_Flip` folders).
- **Deterministic and idempotent**: the tree is a function of (images, seed, flips, source folder); the pool
  files' bytes too (the `.mat` header carries no date). Re-running on a complete tree of the same request
  changes nothing; a different request on an existing tree is refused (`r3fa.errors.UserError`). A killed
  run leaves `standin.json` marked incomplete and the next run finishes it.

The stand-in is for tests and benchmarks of the data path, never for training: AFLW2000-3D is the benchmark
set, and the same image appears under several subjects (faces), so a split by subject does not keep its
pixels out of the other split.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat

from r3fa.atomic import write_text_atomic
from r3fa.errors import UserError
from r3fa.io import Annotation, BadInputError, read_annotation, read_image
from r3fa.landmark_symmetry import IBUG68_FLIP, mirror_coefficients
from r3fa.morphable import MorphableModel, load_model
from r3fa.params import EXP_DIM, SHAPE_DIM, pose_from_pose_para
from r3fa.paths import data_root
from r3fa.readers import W300LP_SUBSETS, side_landmarks_path

FORMAT = "r3fa-300wlp-standin/1"
POOL_DIR = ".standin"
STATE_FILE = "standin.json"
FLIP_SUFFIX = "_Flip"
# views per subset in the real 300W-LP (un-flipped; 3DDFA, Zhu et al. 2016): the proportions of the stand-in
W300LP_VIEWS = {"AFW": 5207, "HELEN": 37676, "IBUG": 1786, "LFPW": 16556}
VIEWS_PER_FACE = (9, 23)  # inclusive range of views k per face; mean 16 as in the real set
JPEG_QUALITY = 95
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by r3fa.standin (300W-LP-format stand-in)".ljust(116, b" ")
_MIRROR_X = np.diag([-1.0, 1.0, 1.0])


@dataclass(frozen=True, slots=True)
class StandinView:
    """One image of the stand-in tree.

    Attributes:
        folder: "AFW", ..., or "AFW_Flip", ...
        name: the file stem, `<subset>_<stem>_<face>_<k>` (the same in a subset and its `_Flip`).
        source: the AFLW2000-3D stem it is made from ("image00002").
    """

    folder: str
    name: str
    source: str

    @property
    def flipped(self) -> bool:
        return self.folder.endswith(FLIP_SUFFIX)


@dataclass(frozen=True)
class StandinSummary:
    """What a stand-in tree holds, and what one `write_standin` call did to it.

    Attributes:
        root: the tree.
        images: images in the tree (plain + flipped).
        folders: images per folder ("AFW", "AFW_Flip", ...).
        faces: distinct `<subset>_<stem>_<face>` names (300W-LP's source photos).
        sources: distinct AFLW2000-3D images used.
        links_made: symlinks created or repaired by this call.
        files_written: pool files (side landmarks, mirrored JPEG and `.mat`) written by this call.
        unchanged: the tree was complete already and nothing was touched.
        request: what was asked: format, images, seed, flips, source folder (as in `standin.json`).
    """

    root: Path
    images: int
    folders: dict[str, int]
    faces: int
    sources: int
    links_made: int = 0
    files_written: int = 0
    unchanged: bool = False
    request: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "images": self.images,
            "folders": self.folders,
            "faces": self.faces,
            "sources": self.sources,
            "links_made": self.links_made,
            "files_written": self.files_written,
            "unchanged": self.unchanged,
            "request": self.request,
        }


# ----------------------------------------------------------------------------- the plan (names only)
def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders; ties to the earlier entry)."""
    exact = np.asarray(weights, np.float64) * total / float(sum(weights))
    counts = np.floor(exact).astype(int)
    for i in sorted(range(len(counts)), key=lambda i: (counts[i] - exact[i], i))[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def plan_views(images: int, sources: Sequence[str], seed: int = 0, flips: bool = True) -> list[StandinView]:
    """The views of a stand-in tree: plain views first (subset by subset, face by face), then the flips.

    Args:
        images: images in the tree, flips included.
        sources: AFLW2000-3D stems to draw faces from (their order matters: pass them sorted).
        seed: fixes which source each face uses and how many views each face has.
        flips: lay out `_Flip` folders (mirror images of the first floor(images/2) plain views).

    Returns:
        `images` views with unique (folder, name).

    Raises:
        UserError: `images` < 1 or no sources.
    """
    if images < 1:
        raise UserError(f"a stand-in needs at least 1 image, got {images}")
    if not sources:
        raise UserError("no AFLW2000-3D sources (image*.jpg with a .mat) to build a stand-in from")
    n_plain = (images + 1) // 2 if flips else images
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sources))
    plain: list[StandinView] = []
    face = 0
    for subset, n_views in zip(W300LP_SUBSETS, _apportion(n_plain, [W300LP_VIEWS[s] for s in W300LP_SUBSETS])):
        made = 0
        while made < n_views:
            views = min(int(rng.integers(VIEWS_PER_FACE[0], VIEWS_PER_FACE[1] + 1)), n_views - made)
            stem = sources[order[face % len(sources)]]
            base = f"{subset}_{stem}_{face // len(sources) + 1}"
            plain.extend(StandinView(subset, f"{base}_{k}", stem) for k in range(views))
            face += 1
            made += views
    flipped = [StandinView(v.folder + FLIP_SUFFIX, v.name, v.source) for v in plain[: images - n_plain]]
    return plain + flipped


# ----------------------------------------------------------------------------- pool files
def _mat_bytes(fields: dict[str, np.ndarray]) -> bytes:
    """A MATLAB 5 `.mat` of `fields` whose bytes depend on the fields only (scipy's header carries a date)."""
    buffer = io.BytesIO()
    savemat(buffer, fields, do_compression=False)
    return _MAT_HEADER + buffer.getvalue()[len(_MAT_HEADER) :]


def side_landmarks_fields(pt3d_68: np.ndarray) -> dict[str, np.ndarray]:
    """300W-LP's side landmark file of an annotation's `pt3d_68` (3, 68): `pts_2d` (68, 2), `pts_3d` (68, 3)."""
    points = np.asarray(pt3d_68, np.float64)
    return {"pts_2d": points[:2].T.copy(), "pts_3d": points.T.copy()}


def mirror_annotations(
    annotations: Sequence[Annotation], widths: Sequence[int], model: MorphableModel
) -> list[dict[str, np.ndarray]]:
    """The 300W-LP-format labels of the mirror images (column j -> `width - 1 - j`) of annotated images.

    In the model frame (y up, image x = model x) the mirror is x -> c - x with c = width - 1. With D = diag(-1,1,1)
    and the mirrored face D V[:, flip] = V' + offset (`mirror_coefficients`, one least-squares call for all):
    sR' = D sR D, which is the pose (pitch, -yaw, -roll) at the same scale, and t' = sR' offset + (c - tx, ty, tz).

    Args:
        annotations: the annotations (`r3fa.io.read_annotation`), each with `pt3d_68`.
        widths: the images' widths in pixels.
        model: the 68-point model (`bfm68`) for the coefficient refit.

    Returns:
        Per annotation: `Pose_Para` (1, 7) float32, `Shape_Para` (199, 1) and `Exp_Para` (29, 1) float64
        (the refitted 40 and 10, then zeros), `pt2d` (2, 68) float64: the mirrored `pt3d_68[:2]` in iBUG order.
    """
    if not annotations:
        return []
    shapes, exps, offsets = mirror_coefficients(
        np.stack([a.shape_para[:SHAPE_DIM] for a in annotations]),
        np.stack([a.exp_para[:EXP_DIM] for a in annotations]),
        model,
    )
    labels = []
    for annotation, width, shape, exp, offset in zip(annotations, widths, shapes, exps, offsets):
        pose = np.asarray(annotation.pose_para, np.float64).reshape(7)
        c = width - 1.0
        sr_t = pose_from_pose_para(pose)
        sr = _MIRROR_X @ sr_t[:, :3] @ _MIRROR_X
        t = sr @ offset + np.array([c - sr_t[0, 3], sr_t[1, 3], sr_t[2, 3]])
        shape_out, exp_out = np.zeros((199, 1)), np.zeros((29, 1))
        shape_out[:SHAPE_DIM, 0], exp_out[:EXP_DIM, 0] = shape, exp
        points = np.asarray(annotation.pt3d_68, np.float64)[:2, IBUG68_FLIP]
        labels.append(
            {
                "Pose_Para": np.array([[pose[0], -pose[1], -pose[2], *t, pose[6]]], np.float32),
                "Shape_Para": shape_out,
                "Exp_Para": exp_out,
                "pt2d": np.stack([c - points[0], points[1]]),
            }
        )
    return labels


def _write_pool(pool: Path, source_root: Path, stems: set[str], flipped: set[str], model: MorphableModel) -> int:
    """Write the side landmark files of `stems` and the mirror images of `flipped`; returns files written.

    Plain writes: the caller marks the tree complete only after `os.sync()`, and an incomplete tree gets its
    whole pool rewritten, so a file cut short by a crash is never kept."""
    annotations, widths, jpegs = {}, {}, {}  # encoded mirror images: 1/20 of the decoded ones' memory
    try:
        for stem in sorted(stems | flipped):
            annotations[stem] = read_annotation(source_root / f"{stem}.mat")
            if annotations[stem].pt3d_68 is None:
                raise BadInputError(source_root / f"{stem}.mat", "no pt3d_68")
        for stem in sorted(flipped):
            image = read_image(source_root / f"{stem}.jpg")
            widths[stem] = image.shape[1]
            jpegs[stem] = cv2.imencode(".jpg", cv2.flip(image, 1), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
    except BadInputError as err:
        raise UserError(f"stand-in source {err.path}: {err.reason}; use a clean AFLW2000-3D copy (--source)") from None
    (pool / "landmarks").mkdir(parents=True, exist_ok=True)
    (pool / "flip").mkdir(parents=True, exist_ok=True)
    for stem in sorted(stems):
        side = side_landmarks_fields(annotations[stem].pt3d_68)
        (pool / "landmarks" / f"{stem}_pts.mat").write_bytes(_mat_bytes(side))
    labels = mirror_annotations([annotations[s] for s in jpegs], list(widths.values()), model)
    for (stem, jpeg), label in zip(jpegs.items(), labels):
        (pool / "flip" / f"{stem}.jpg").write_bytes(jpeg.tobytes())
        (pool / "flip" / f"{stem}.mat").write_bytes(_mat_bytes(label))
    return len(stems) + 2 * len(jpegs)


# ----------------------------------------------------------------------------- the tree
def _make_links(pairs: Sequence[tuple[str, str]]) -> int:
    """Make each `link` a symlink to its `target` (replacing anything else there); returns how many were made."""
    made = 0
    for link, target in pairs:
        try:
            os.symlink(target, link)
        except FileExistsError:
            try:
                if os.readlink(link) == target:
                    continue
            except OSError:  # a file, not a link
                pass
            os.unlink(link)
            os.symlink(target, link)
        made += 1
    return made


def _folder_links(root: Path, source_root: Path, folder: str, views: Sequence[StandinView]) -> list[tuple[str, str]]:
    """(link, target) pairs of one folder's views: image and annotation, and a plain view's side landmark file
    (`r3fa.readers.side_landmarks_path`). Creates the folders. Plain strings: pathlib costs more than the links."""
    here = root / folder
    here.mkdir(exist_ok=True)
    if folder.endswith(FLIP_SUFFIX):
        pool = f"../{POOL_DIR}/flip"
        return [(f"{here}/{v.name}{ext}", f"{pool}/{v.source}{ext}") for v in views for ext in (".jpg", ".mat")]
    side = side_landmarks_path(here / "x.mat").parent
    side.mkdir(parents=True, exist_ok=True)
    pool = f"{os.path.relpath(root / POOL_DIR, side)}/landmarks"
    pairs = [(f"{here}/{v.name}{ext}", f"{source_root}/{v.source}{ext}") for v in views for ext in (".jpg", ".mat")]
    return pairs + [(f"{side}/{v.name}_pts.mat", f"{pool}/{v.source}_pts.mat") for v in views]


def _read_state(root: Path) -> dict | None:
    path = root / POOL_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: unreadable stand-in state; remove {root} and lay it out again") from None


def _summary(root: Path, views: Sequence[StandinView], request: dict, **done: int | bool) -> StandinSummary:
    return StandinSummary(
        root=root,
        images=len(views),
        folders=dict(sorted(Counter(v.folder for v in views).items())),
        faces=len({v.name.rsplit("_", 1)[0] for v in views}),
        sources=len({v.source for v in views}),
        request=request,
        **done,
    )


def write_standin(
    out: str | Path, images: int, *, seed: int = 0, flips: bool = True, source_root: str | Path | None = None
) -> StandinSummary:
    """Lay out (or finish, or leave alone) a 300W-LP-shaped stand-in tree of `images` images.

    Args:
        out: the tree's folder: new, empty, or a stand-in of the same request.
        images: images in the tree, flips included (300W-LP: 122,450).
        seed: fixes the faces' sources and view counts.
        flips: lay out the `_Flip` folders (mirror images).
        source_root: the AFLW2000-3D folder; default `data_root() / "aflw2000_3d"`.

    Returns:
        What the tree holds and what this call did (`unchanged` when it was complete already).

    Raises:
        UserError: `out` is a non-empty folder that is not a stand-in, or a stand-in of another request;
            `images` < 1; the source folder has no usable AFLW2000-3D pairs.
    """
    root = Path(out).absolute()
    source = Path(source_root if source_root is not None else data_root() / "aflw2000_3d").resolve()
    stems = sorted(p.stem for p in source.glob("image*.jpg") if p.with_suffix(".mat").is_file())
    request = {"format": FORMAT, "images": images, "seed": seed, "flips": flips, "source": str(source)}
    views = plan_views(images, stems, seed, flips)
    state = _read_state(root)
    if state is None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} exists and is not a stand-in tree; choose a new or empty folder")
    if state is not None:
        asked = {k: state.get(k) for k in request}
        if asked != request:
            differ = ", ".join(f"{k}: {asked[k]!r} there, {v!r} asked" for k, v in request.items() if asked[k] != v)
            raise UserError(f"{root} holds another stand-in ({differ}); remove it or choose another folder")
        if state.get("complete"):
            return _summary(root, views, request, unchanged=True)
    state_path = root / POOL_DIR / STATE_FILE
    write_text_atomic(state_path, json.dumps({**request, "complete": False}, indent=2))
    written = _write_pool(
        root / POOL_DIR,
        source,
        {v.source for v in views if not v.flipped},
        {v.source for v in views if v.flipped},
        load_model("bfm68"),
    )
    by_folder: dict[str, list[StandinView]] = {}
    for view in views:
        by_folder.setdefault(view.folder, []).append(view)
    made = sum(_make_links(_folder_links(root, source, folder, by_folder[folder])) for folder in sorted(by_folder))
    os.sync()  # the links and folders are on disk before the tree is marked complete
    summary = _summary(root, views, request, links_made=made, files_written=written)
    write_text_atomic(state_path, json.dumps({**request, "complete": True, "folders": summary.folders}, indent=2))
    return summary
