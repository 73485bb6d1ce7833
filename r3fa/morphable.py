"""The 3D morphable model (3DMM) asset: one self-describing `.npz` format, its builder, reconstruction.

A `MorphableModel` holds a mean shape and linear shape/expression bases over N vertices, stored x,y,z
interleaved (`(3N,)` and `(3N, K)`), plus its units, landmark indices and optional triangles. Three are
built from the 3DDFA release (`build_from_3ddfa`):

- `bfm68`: the model at the 68 landmarks (`c++/weights/*.txt`), 40 shape + 10 expression bases.
- `grid4096`: 4096 surface points on a 64x64 grid (`Model_PAF.pkl`) with two triangles per grid cell.
  Its shape basis is the pickle's. The pickle's `w_exp_filter` is a copy of the shape basis (DESIGN §2 trap),
  so the expression basis here is *derived*: the true 68-point expression basis interpolated over the grid
  with a thin-plate-spline RBF in the mean face's (x, y) coordinates. The asset's `notes` say so.
- `dense_mean`: the 53,215-vertex BFM mean (`u_shp + u_exp`) with its 105,840 triangles; no bases exist
  here (empty `(3N, 0)`), so it only serves meshes of the mean face and landmark-index checks.

Reconstruction (`posed_vertices`) follows DESIGN §2 and works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from r3fa.atomic import atomic_writer
from r3fa.params import EXP_DIM, SHAPE_DIM, exp_coeffs, pose_matrix, shape_coeffs
from r3fa.paths import cache_root, data_root
from r3fa.safe_pickle import load_numeric_pickle

ASSET_FORMAT = "r3fa-morphable-v1"
MODEL_NAMES = ("bfm68", "grid4096", "dense_mean")
GRID_SIDE = 64


@dataclass(frozen=True)
class MorphableModel:
    """A linear 3DMM: vertices = mean + shape_basis @ a_shp + exp_basis @ a_exp (x,y,z interleaved)."""

    name: str
    units: str
    mean: np.ndarray  # (3N,) float32
    shape_basis: np.ndarray  # (3N, Ks) float32, Ks in {0, 40}
    exp_basis: np.ndarray  # (3N, Ke) float32, Ke in {0, 10}
    landmark_indices: np.ndarray  # (68,) int64 vertex ids of the 68 landmarks; empty when unknown
    triangles: np.ndarray | None = None  # (T, 3) int32, 0-based, or None
    notes: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0] // 3

    @property
    def has_bases(self) -> bool:
        return self.shape_basis.shape[1] == SHAPE_DIM and self.exp_basis.shape[1] == EXP_DIM

    def subset(self, vertex_ids: np.ndarray, name: str | None = None) -> "MorphableModel":
        """The model restricted to some vertices (e.g. the landmarks), without triangles."""
        rows = (3 * np.asarray(vertex_ids)[:, None] + np.arange(3)).reshape(-1)
        return MorphableModel(
            name=name or f"{self.name}[{len(vertex_ids)}]",
            units=self.units,
            mean=self.mean[rows],
            shape_basis=self.shape_basis[rows],
            exp_basis=self.exp_basis[rows],
            landmark_indices=np.empty(0, np.int64),
            notes=f"subset of {self.name}",
        )

    # ------------------------------------------------------------------ serialisation
    def save(self, path: str | Path) -> Path:
        """Write the asset as one `.npz` (atomic: temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": ASSET_FORMAT, "name": self.name, "units": self.units, "notes": self.notes, **self.meta}
        arrays = dict(
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            mean=self.mean,
            shape_basis=self.shape_basis,
            exp_basis=self.exp_basis,
            landmark_indices=self.landmark_indices,
        )
        if self.triangles is not None:
            arrays["triangles"] = self.triangles
        with atomic_writer(path) as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MorphableModel":
        with np.load(Path(path), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format") != ASSET_FORMAT:
                raise ValueError(f"{path}: not an r3fa morphable-model asset (format={header.get('format')!r})")
            meta = {k: v for k, v in header.items() if k not in ("format", "name", "units", "notes")}
            return cls(
                name=header["name"],
                units=header["units"],
                mean=z["mean"],
                shape_basis=z["shape_basis"],
                exp_basis=z["exp_basis"],
                landmark_indices=z["landmark_indices"],
                triangles=z["triangles"] if "triangles" in z.files else None,
                notes=header.get("notes", ""),
                meta=meta,
            )


# ---------------------------------------------------------------------------- reconstruction
def shape_vertices(model: MorphableModel, params):
    """Unposed vertices `(..., 3, N)` of `(..., 62)` params (numpy or torch, bases converted by the caller)."""
    return shape_vertices_from(model.mean, model.shape_basis, model.exp_basis, params)


def shape_vertices_from(mean, shape_basis, exp_basis, params):
    """`mean + W_shp a_shp + W_exp a_exp`, reshaped x,y,z-interleaved -> `(..., 3, N)`.

    `mean`, the bases and `params` must all be numpy arrays or all torch tensors (same dtype/device).
    """
    flat = mean + (shape_basis @ shape_coeffs(params)[..., None])[..., 0]
    flat = flat + (exp_basis @ exp_coeffs(params)[..., None])[..., 0]
    return flat.reshape(*flat.shape[:-1], -1, 3).swapaxes(-1, -2)


def posed_vertices_from(mean, shape_basis, exp_basis, params):
    """`sR @ V + t`, `(..., 3, N)`, in the parameters' frame (numpy or torch)."""
    pose = pose_matrix(params)
    return pose[..., :3] @ shape_vertices_from(mean, shape_basis, exp_basis, params) + pose[..., 3:]


def posed_vertices(model: MorphableModel, params: np.ndarray) -> np.ndarray:
    """Vertices of `model` posed by `(..., 62)` numpy params, `(..., 3, N)` float64."""
    params = np.asarray(params, np.float64)
    return posed_vertices_from(
        model.mean.astype(np.float64), model.shape_basis.astype(np.float64), model.exp_basis.astype(np.float64), params
    )


# ---------------------------------------------------------------------------- building from 3DDFA
def _read_txt(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.float64)


def build_bfm68(release: Path) -> MorphableModel:
    w = release / "c++" / "weights"
    mean = _read_txt(w / "u_base.txt").reshape(-1)
    shp = _read_txt(w / "w_shp_base.txt").reshape(mean.size, -1)
    exp = _read_txt(w / "w_exp_base.txt").reshape(mean.size, -1)
    return MorphableModel(
        name="bfm68",
        units="BFM units (as 300W-LP Shape_Para/Exp_Para scale)",
        mean=mean.astype(np.float32),
        shape_basis=shp.astype(np.float32),
        exp_basis=exp.astype(np.float32),
        landmark_indices=np.arange(68, dtype=np.int64),
        notes="3DDFA c++/weights: BFM mean, 40 shape and 10 expression bases at the 68 landmarks",
    )


def grid_triangles(side: int = GRID_SIDE) -> np.ndarray:
    """Two triangles per cell of a `side x side` grid whose point i is (row i // side, column i % side)."""
    r, c = np.meshgrid(np.arange(side - 1), np.arange(side - 1), indexing="ij")
    a = (r * side + c).reshape(-1)
    b, d, e = a + 1, a + side, a + side + 1
    return np.concatenate([np.stack([a, d, b], 1), np.stack([b, d, e], 1)]).astype(np.int32)


def build_grid4096(release: Path, bfm68: MorphableModel) -> MorphableModel:
    """The 64x64-grid model, with the expression basis interpolated from the 68-point one (see module doc)."""
    from scipy.interpolate import RBFInterpolator

    paf = load_numeric_pickle(release / "train.configs" / "Model_PAF.pkl")
    mean = np.asarray(paf["mu_filter"], np.float64).reshape(-1)
    shp = np.asarray(paf["w_filter"], np.float64)
    grid_xy = mean.reshape(-1, 3)[:, :2]
    lm_xy = bfm68.mean.reshape(-1, 3)[:, :2].astype(np.float64)
    lm_exp = bfm68.exp_basis.astype(np.float64).reshape(68, 3 * EXP_DIM)  # per landmark: x,y,z rows of 10 columns
    interp = RBFInterpolator(lm_xy, lm_exp, kernel="thin_plate_spline", smoothing=1e-3)
    exp = interp(grid_xy).reshape(-1, EXP_DIM)
    return MorphableModel(
        name="grid4096",
        units=bfm68.units,
        mean=mean.astype(np.float32),
        shape_basis=shp.astype(np.float32),
        exp_basis=exp.astype(np.float32),
        landmark_indices=np.empty(0, np.int64),
        triangles=grid_triangles(),
        notes=(
            "Model_PAF.pkl: 4096 points on a 64x64 grid (point i = row i//64, col i%64), 40 shape bases. "
            "Expression basis DERIVED: the pickle's w_exp_filter is a copy of the shape basis, so the 68-point "
            "expression basis (w_exp_base.txt) is interpolated over the grid with a thin-plate-spline RBF in the "
            "mean face's (x, y)."
        ),
    )


def build_dense_mean(release: Path) -> MorphableModel:
    from scipy.io import loadmat

    tc = release / "train.configs"
    mean = (np.load(tc / "u_shp.npy") + np.load(tc / "u_exp.npy")).reshape(-1).astype(np.float32)
    keypoints = np.load(tc / "keypoints_sim.npy")
    tri = loadmat(release / "visualize" / "tri.mat")["tri"].astype(np.int64) - 1
    return MorphableModel(
        name="dense_mean",
        units="BFM units",
        mean=mean,
        shape_basis=np.zeros((mean.size, 0), np.float32),
        exp_basis=np.zeros((mean.size, 0), np.float32),
        landmark_indices=(keypoints[::3] // 3).astype(np.int64),
        triangles=tri.T.astype(np.int32),
        notes="BFM mean (u_shp + u_exp) with tri.mat; the dense bases are not available, so no shape/expression bases",
    )


def build_from_3ddfa(release: str | Path, name: str) -> MorphableModel:
    """Build one of `MODEL_NAMES` from a 3DDFA release folder (the one holding c++/ and train.configs/)."""
    release = Path(release)
    if name == "bfm68":
        return build_bfm68(release)
    if name == "grid4096":
        return build_grid4096(release, build_bfm68(release))
    if name == "dense_mean":
        return build_dense_mean(release)
    raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")


def load_model(name: str = "bfm68") -> MorphableModel:
    """The named model from the asset cache, built from `$R3FA_DATA/3ddfa` on first use.

    The cache name includes a hash of this module, so a change to the builders rebuilds the assets."""
    builder = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    path = cache_root() / "assets" / f"{name}-{builder}.npz"
    if not path.exists():
        build_from_3ddfa(data_root() / "3ddfa", name).save(path)
    return MorphableModel.load(path)
