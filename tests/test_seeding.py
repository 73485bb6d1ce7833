"""`r3fa.seeding.default_rngs` must give NumPy's own generators: the same PCG64 state, the same draws."""

from __future__ import annotations

import numpy as np
import pytest

from r3fa.augment import _hash64, copy_rng, copy_rngs
from r3fa.seeding import default_rngs


def _entropies() -> list[tuple[int, ...]]:
    """Tuples as a build makes them (seed, 64-bit key hash, copy index), and every length in words that
    `SeedSequence` treats differently: shorter than its pool, as long, longer, and words of 0 and 2**32 - 1."""
    draws = np.random.default_rng(2026)
    made = [(0, _hash64(f"aflw2000_3d_image{k:05d}"), k % 7) for k in range(64)]
    made += [(int(draws.integers(0, 2**31)), int(draws.integers(0, 2**63)) * 2 + 1, 3) for _ in range(16)]
    edges = [(0,), (5,), (0, 0, 0), (2**32 - 1, 2**32, 0), (2**40 + 7, 3, 0), (1, 2, 3, 4, 5, 6, 7),
             (2**64 - 1, 2**32 - 1, 2**31), (2**200 + 1, 9), (0, 2**32 - 1)]  # fmt: skip
    return made + edges


def test_the_generators_are_numpys() -> None:
    entropies = _entropies()
    for entropy, rng in zip(entropies, default_rngs(entropies), strict=True):
        expected = np.random.default_rng(list(entropy))
        assert rng.bit_generator.state == expected.bit_generator.state, entropy
        np.testing.assert_array_equal(rng.random(8), expected.random(8))
        assert rng.integers(0, 2**62) == expected.integers(0, 2**62)


def test_copy_rngs_are_copy_rng() -> None:
    copies = [(f"300w_lp_AFW_{k // 3}", k % 3) for k in range(30)]
    for (key, index), rng in zip(copies, copy_rngs(11, copies), strict=True):
        assert rng.bit_generator.state == copy_rng(11, key, index).bit_generator.state


def test_negative_entropy_is_refused_like_numpy() -> None:
    with pytest.raises(ValueError):
        np.random.default_rng([-1, 2])
    with pytest.raises(ValueError):
        default_rngs([(-1, 2)])
