"""Inference: a trained network plus the whitening and crop convention it was trained with, on real crops.

`load_predictor` reads an r3fa checkpoint (`r3fa.checkpoint`) or a raw 3DDFA-V2 `.pth` (then the network is
`mobilenet_v1`, its widen factor read off the weights, whitening "v2", `CropConvention.V2`). `Predictor` turns BGR
uint8 crops into de-whitened 62-d parameters and into 68 image-frame landmarks through each crop's roi; the
evaluation engine, the training run's checks and `r3fa predict` all go through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from r3fa import models
from r3fa.checkpoint import is_r3fa_checkpoint, load_checkpoint
from r3fa.crop import CROP_SIZE, CropConvention, crop_image
from r3fa.labels import landmarks_in_image
from r3fa.morphable import MorphableModel, load_model
from r3fa.models.mobilenet_v1 import load_3ddfa_v2_state_dict, widen_factor_of
from r3fa.params import Whitening, load_whitening
from r3fa.shard_contract import normalise_pixels

V2_MODEL = "mobilenet_v1"


def normalise_crops(crops: np.ndarray) -> torch.Tensor:
    """BGR uint8 crops `(B, H, W, 3)` (or one `(H, W, 3)`) -> float32 `(B, 3, H, W)`, normalised as the training
    loaders do (`r3fa.shard_contract.normalise_pixels`)."""
    arr = np.asarray(crops)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected BGR crops (B, H, W, 3), got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return normalise_pixels(x)


class Predictor:
    """A network with the statistics it needs to be used on crops.

    Args:
        model: maps normalised crops to whitened parameters.
        whitening: the statistics the model was trained with.
        convention: the crop convention of its training labels.
        device: where the model runs ("cpu", "cuda", a torch.device).
        bfm68: 68-landmark model for `landmarks_in_image` (default `load_model("bfm68")`).
    """

    def __init__(
        self,
        model: nn.Module,
        whitening: Whitening,
        convention: CropConvention,
        device: str | torch.device = "cpu",
        bfm68: MorphableModel | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.whitening = whitening
        self.convention = CropConvention(convention)
        self.bfm68 = bfm68 if bfm68 is not None else load_model("bfm68")

    @torch.no_grad()
    def params(self, crops: np.ndarray) -> np.ndarray:
        """De-whitened crop-frame parameters `(B, 62)` (float64) of BGR uint8 crops `(B, 120, 120, 3)`."""
        x = normalise_crops(crops).to(self.device)
        if x.shape[-2:] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected {CROP_SIZE}x{CROP_SIZE} crops, got {tuple(x.shape[-2:])}")
        out = self.model(x).float().cpu().numpy().astype(np.float64)
        return self.whitening.unwhiten(out)

    def landmarks_in_image(self, crops: np.ndarray, rois: np.ndarray) -> np.ndarray:
        """`(B, 3, 68)` image-frame landmarks of crops cut with `rois` `(B, 4)` [sx, sy, ex, ey]."""
        return landmarks_in_image(self.bfm68, self.params(crops), np.asarray(rois, np.float64), self.convention)


def load_predictor(
    checkpoint: str | Path, model_name: str | None = None, device: str | torch.device = "cpu"
) -> Predictor:
    """A `Predictor` from an r3fa checkpoint or a raw 3DDFA-V2 `.pth` (strict weight loading in both cases).

    Args:
        checkpoint: the file.
        model_name: for an r3fa checkpoint, must match the recorded name when given; for a 3DDFA-V2 file, must be
            None or "mobilenet_v1".
        device: where to run.

    Raises:
        ValueError: a name that contradicts the checkpoint, or weights that do not fit the model.
    """
    payload = load_checkpoint(checkpoint)
    if is_r3fa_checkpoint(payload):
        recorded = payload["model"]["name"]
        if model_name is not None and model_name != recorded:
            raise ValueError(f"{checkpoint}: holds a {recorded!r} model, not {model_name!r}")
        model = models.create(recorded, **payload["model"].get("kwargs", {}))
        model.load_state_dict(payload["state_dict"], strict=True)
        whitening = Whitening.from_dict(payload["whitening"])
        convention = CropConvention(payload["crop_convention"])
    else:
        if model_name not in (None, V2_MODEL):
            raise ValueError(f"{checkpoint}: a raw 3DDFA-V2 checkpoint holds a {V2_MODEL!r}, not {model_name!r}")
        state = load_3ddfa_v2_state_dict(payload)
        model = models.create(V2_MODEL, widen_factor=widen_factor_of(state))
        model.load_state_dict(state, strict=True)
        whitening, convention = load_whitening("v2"), CropConvention.V2
    return Predictor(model, whitening, convention, device)


def predict_in_images(
    predictor: Predictor, images: list[np.ndarray], rois: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Crop each image with its roi (`r3fa.crop.crop_image`) and run the predictor on the batch.

    Args:
        predictor: the network and its statistics.
        images: BGR uint8 images of any sizes.
        rois: `(B, 4)` [sx, sy, ex, ey] image-frame boxes, one per image.

    Returns:
        `(B, 62)` crop-frame parameters and `(B, 3, 68)` image-frame landmarks.
    """
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    crops = np.stack([crop_image(image, roi) for image, roi in zip(images, rois, strict=True)])
    params = predictor.params(crops)
    return params, landmarks_in_image(predictor.bfm68, params, rois, predictor.convention)
