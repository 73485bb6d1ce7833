"""r3fa: the library behind R3FA face alignment.

Pure functions and classes only: 3DMM assets, the 62-parameter geometry, cropping, augmentation,
face profiling, models, losses, metrics and loaders. Orchestration lives in `pipelines/` and `flows/`;
nothing here imports them.
"""

__version__ = "0.1.0"
