"""Many NumPy generators seeded at once, each the very generator `np.random.default_rng(entropy)` makes.

A build seeds one generator per augmented copy (`r3fa.augment.copy_rngs`). `default_rng([seed, key hash,
copy index])` costs ~21 us, most of it in `SeedSequence`: hashing the entropy into a pool of four 32-bit
words, then the pool into PCG64's 128-bit state and increment. Both are fixed sequences of 32-bit
multiplies, xors and shifts whose constants do not depend on the data, so here they run for a whole batch
of entropy tuples at once in NumPy `uint32` arithmetic, and PCG64 is handed the finished words through a
seed sequence that only returns them (`_Words`): ~4 us a generator. The algorithm is NumPy's `SeedSequence`
(numpy/random/bit_generator.pyx; NEP 19 keeps its streams stable); `tests/test_seeding.py` compares every
state with NumPy's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.random.bit_generator import ISeedSequence

_POOL_WORDS = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875  # hashing the entropy into the pool
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED  # hashing the pool into the generated state
_MIX_L, _MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_MASK32 = 0xFFFFFFFF
_HALF = np.uint32(16)
_STATE_WORDS = 8  # PCG64 asks for 4 uint64: its 128-bit state and increment


class _Words(ISeedSequence):
    """A seed sequence that gives PCG64 the state words computed here."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        if n_words != len(self.words) or np.dtype(dtype) != self.words.dtype:
            raise ValueError(f"holds {len(self.words)} {self.words.dtype} words, asked for {n_words} {np.dtype(dtype)}")
        return self.words


def default_rngs(entropies: Sequence[Sequence[int]]) -> list[np.random.Generator]:
    """`[np.random.default_rng(list(e)) for e in entropies]` (non-negative integers), the same generators,
    their seeding done together for the tuples of the same length in words."""
    words = [[word for value in entropy for word in _uint32_words(value)] for entropy in entropies]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(words):
        by_length.setdefault(len(row), []).append(i)
    rngs: list[np.random.Generator | None] = [None] * len(words)
    for rows in by_length.values():
        state = _generate_state(_mix_entropy(np.array([words[i] for i in rows], np.uint32)))
        for i, state_words in zip(rows, state):
            rngs[i] = np.random.Generator(np.random.PCG64(_Words(state_words)))
    return rngs


def _uint32_words(value: int) -> list[int]:
    """The little-endian 32-bit words of a non-negative integer ([0] for 0), as `SeedSequence` splits it."""
    value = int(value)
    if 0 <= value <= _MASK32:
        return [value]
    if value < 0:
        raise ValueError(f"entropy must be non-negative, got {value}")
    words = []
    while value:
        words.append(value & _MASK32)
        value >>= 32
    return words


def _hash_constants(init: int, mult: int, count: int) -> list[tuple[np.uint32, np.uint32]]:
    """The (xor, multiply) constants of `count` successive hashes: each xors with the current hash constant,
    then advances it (times `mult`) and multiplies by it. They do not depend on the data."""
    pairs, const = [], init
    for _ in range(count):
        advanced = (const * mult) & _MASK32
        pairs.append((np.uint32(const), np.uint32(advanced)))
        const = advanced
    return pairs


_MIX_HASHES = _hash_constants(_INIT_A, _MULT_A, _POOL_WORDS**2)  # enough for entropy of up to 4 words
_STATE_HASHES = _hash_constants(_INIT_B, _MULT_B, _STATE_WORDS)


def _hashed(value: np.ndarray, constants: tuple[np.uint32, np.uint32]) -> np.ndarray:
    xor, multiply = constants
    value = (value ^ xor) * multiply
    return value ^ (value >> _HALF)


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = _MIX_L * x - _MIX_R * y
    return result ^ (result >> _HALF)


def _mix_entropy(entropy: np.ndarray) -> list[np.ndarray]:
    """The four pool words (columns) of `SeedSequence.mix_entropy` of rows of entropy words `(n, length)`."""
    length = entropy.shape[1]
    # hashes taken below: one per pool word, one per ordered pair of pool words, a pool's worth per extra word
    count = _POOL_WORDS**2 + _POOL_WORDS * max(0, length - _POOL_WORDS)
    hashes = iter(_MIX_HASHES if count == len(_MIX_HASHES) else _hash_constants(_INIT_A, _MULT_A, count))
    zeros = np.zeros(len(entropy), np.uint32)
    # the entropy up to the pool's size (the pool's rest hashed from zeros)
    pool = [_hashed(entropy[:, i] if i < length else zeros, next(hashes)) for i in range(_POOL_WORDS)]
    for src in range(_POOL_WORDS):  # every pool word into every other
        for dst in range(_POOL_WORDS):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hashed(pool[src], next(hashes)))
    for src in range(_POOL_WORDS, length):  # the entropy beyond the pool's size into every pool word
        for dst in range(_POOL_WORDS):
            pool[dst] = _mix(pool[dst], _hashed(entropy[:, src], next(hashes)))
    return pool


def _generate_state(pool: list[np.ndarray]) -> np.ndarray:
    """`SeedSequence.generate_state(4, np.uint64)` of each row of the pool: `(n, 4)` uint64."""
    state = np.empty((len(pool[0]), _STATE_WORDS), np.uint32)
    for i, constants in enumerate(_STATE_HASHES):
        state[:, i] = _hashed(pool[i % _POOL_WORDS], constants)
    return state.astype("<u4").view("<u8").astype(np.uint64)
