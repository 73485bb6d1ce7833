"""The one exception type for a caller's mistake.

A `UserError` is something the person running r3fa can fix: a missing file, a config that does not validate,
an output folder another build holds, a checkpoint that cannot resume this run. Every entry point (the `r3fa`
command, `r3fa train`/`python -m r3fa.training`, the Prefect flows) turns it into one clear line and exit code 2
(Prefect: a failed run that is not retried), never a traceback. Bad *data* is different: one unusable sample is
an `r3fa.io.BadInputError` and becomes a rejection, the run goes on.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake of the caller, with the message that tells them what to do about it."""
