"""The model registry: every backbone by name, so configs and commands name a model and never branch on it.

`create(name, **kwargs)` builds one; `available()` lists the names. Every model maps a `(B, 3, 120, 120)` float
batch of BGR crops normalised as `(x - 127.5) / 128` (NCHW, channels-last memory format accepted) to `(B, 62)`
whitened 3DMM parameters.

| name | module | note |
|---|---|---|
| `mobdensenet` | `mobdensenet` | R3FA's network (paper Fig. 2-3), fully convolutional |
| `mobilenet_v2` | `mobilenet_v2` | Table 2 baseline |
| `densenet121` | `densenet` | Table 2 baseline |
| `resnext50_32x4d` | `resnext` | Table 2 baseline |
| `mobilenet_v1` | `mobilenet_v1` | 3DDFA-V2's network; `widen_factor` 0.5 (mb05) or 1.0 (mb1) |
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from r3fa.models.densenet import DenseNet121
from r3fa.models.mobdensenet import MobDenseNet
from r3fa.models.mobilenet_v1 import MobileNetV1
from r3fa.models.mobilenet_v2 import MobileNetV2
from r3fa.models.resnext import ResNeXt50

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mobdensenet": MobDenseNet,
    "mobilenet_v2": MobileNetV2,
    "densenet121": DenseNet121,
    "resnext50_32x4d": ResNeXt50,
    "mobilenet_v1": MobileNetV1,
}


def available() -> list[str]:
    """The registered model names."""
    return list(_REGISTRY)


def create(name: str, **kwargs) -> nn.Module:
    """A new, randomly initialised model.

    Args:
        name: one of `available()`.
        **kwargs: passed to the model's constructor (e.g. `widen_factor=0.5` for `mobilenet_v1`).

    Raises:
        ValueError: for an unknown name.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(_REGISTRY)}") from None
    return factory(**kwargs)
