"""Which task failures Prefect should retry: only those that can go differently the second time.

A retried task waits (10 s, then 60 s for training) before failing with the same message when the cause is
deterministic: a missing manifest, a config that does not validate, a checkpoint of another run, a diverged
training. `retry_transient` is the `retry_condition_fn` of every retried task: it refuses a retry for a
caller's mistake (`r3fa.errors.UserError`, including `DivergenceError` and `NonFiniteCheckpointError`), a
pydantic `ValidationError`, a missing or unusable path (`FileNotFoundError`, `IsADirectoryError`,
`NotADirectoryError`, `PermissionError`) and the programming errors that repeat identically (`ValueError`,
`TypeError`, `KeyError`, `AttributeError`, `NotImplementedError`, `AssertionError`, `ImportError`). Everything
else is retried: other `OSError`s (a full disk, a network file system, a lost Dask worker's connection),
`RuntimeError`s (a killed loader worker, a CUDA/NCCL failure), `MemoryError`, timeouts.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from r3fa.errors import UserError

PERMANENT = (
    UserError,
    ValidationError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    NotImplementedError,
    AssertionError,
    ImportError,
)


def is_transient(error: BaseException | None) -> bool:
    """Whether a task that raised `error` may succeed if run again (None, an unknown failure: yes)."""
    return not isinstance(error, PERMANENT)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry the failed `state` only when its exception `is_transient`."""
    error = state.data if isinstance(state.data, BaseException) else None
    return is_transient(error)
