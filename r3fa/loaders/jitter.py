"""The online photometric jitter of the training loaders: one spec, one set of maths, two implementations.

Not to be confused with the builder's offline augmentation (`r3fa.augment`, geometry included, written into the
shards): this runs in the loader at every epoch and never moves a pixel, so the labels stay valid.

Why one module: the DALI pipeline and the PyTorch fallback must apply the *same* distribution, or `kind: auto`
would change training from one machine to the next. So the random draws are made here, in numpy, per sample
from (seed, epoch, global position in the canonical order) — a resumed run, another world size or the other
loader sees the same jitter for the same sample — and the maths is written once below (`apply_jitter`, the
reference); the DALI pipeline (`r3fa.loaders.dali`) feeds the same draws to operators that compute the same
formula, and a test checks that both give the same pixels.

The maths, on a BGR float image x (0-255), per sample:
1. colour: x <- b (s x + (1 - s) g(x)), g(x) = 0.114 B + 0.587 G + 0.299 R (brightness b, saturation s), i.e. one
   3x3 matrix `colour_matrix` applied to every pixel;
2. contrast: x <- c (x - m) + m, m = mean of x over all pixels and channels;
3. blur (with probability `blur_prob`): Gaussian, sigma drawn, window 2 ceil(3 sigma) + 1, borders reflected
   (OpenCV's BORDER_REFLECT_101, DALI's default);
4. noise (with probability `noise_prob`): + std N(0, 1) per pixel and channel, from the sample's own generator;
5. clamp to [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# BGR weights of the luma used for saturation.
GREY_BGR = np.array([0.114, 0.587, 0.299], np.float32)


@dataclass(frozen=True)
class OnlineJitter:
    """Ranges of the online jitter: factors uniform in [1 - x, 1 + x]; blur and noise with their probability."""

    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_prob: float = 0.2
    noise_std: tuple[float, float] = (2.0, 8.0)


@dataclass(frozen=True)
class JitterDraw:
    """The jitter of one sample: factors, blur sigma (0: no blur), noise std (0: no noise) and its noise seed."""

    brightness: float
    contrast: float
    saturation: float
    blur_sigma: float
    noise_std: float
    noise_seed: int

    def colour_matrix(self) -> np.ndarray:
        """3x3 float32 M with x' = M x per BGR pixel (brightness and saturation together)."""
        s = self.saturation
        return (self.brightness * (s * np.eye(3) + (1 - s) * np.outer(np.ones(3), GREY_BGR))).astype(np.float32)

    def noise(self, shape: tuple[int, ...]) -> np.ndarray:
        """The additive noise of this sample (float32), zeros when it draws none."""
        if self.noise_std == 0:
            return np.zeros(shape, np.float32)
        return np.random.default_rng(self.noise_seed).standard_normal(shape, np.float32) * np.float32(self.noise_std)


def draw_jitter(spec: OnlineJitter, seed: int, epoch: int, position: int) -> JitterDraw:
    """The jitter of the sample at `position` of epoch `epoch`'s canonical order (a pure function)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(position), 0x6A17]))
    u = rng.random(7)
    blur = u[3] < spec.blur_prob
    noise = u[5] < spec.noise_prob
    return JitterDraw(
        brightness=float(1 + spec.brightness * (2 * u[0] - 1)),
        contrast=float(1 + spec.contrast * (2 * u[1] - 1)),
        saturation=float(1 + spec.saturation * (2 * u[2] - 1)),
        blur_sigma=float(spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[4]) if blur else 0.0,
        noise_std=float(spec.noise_std[0] + (spec.noise_std[1] - spec.noise_std[0]) * u[6]) if noise else 0.0,
        noise_seed=int(rng.integers(2**63)),
    )


def blur_window(sigma: float) -> int:
    """Gaussian window of a sigma: 2 ceil(3 sigma) + 1 (DALI's default, used explicitly with OpenCV)."""
    return 2 * math.ceil(3 * sigma) + 1


def apply_jitter(image: np.ndarray, draw: JitterDraw) -> np.ndarray:
    """The reference implementation: one BGR uint8 (H, W, 3) image -> float32 (H, W, 3) in [0, 255]."""
    x = image.astype(np.float32) @ draw.colour_matrix().T
    mean = x.mean(dtype=np.float64)
    x = ((x - mean) * draw.contrast + mean).astype(np.float32)
    if draw.blur_sigma > 0:
        k = blur_window(draw.blur_sigma)
        x = cv2.GaussianBlur(x, (k, k), draw.blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    if draw.noise_std > 0:
        x = x + draw.noise(x.shape)
    return np.clip(x, 0, 255)
