"""The shell commands of README.md and docs/*.md, executed: a documented command that fails is a bug.

Every command is taken from the docs' code blocks (```bash / sh / shell / console blocks whole; unlabelled
blocks only for lines that start like a command, so directory trees and output samples stay out), with
backslash continuations joined. Each one must be classified, or `test_every_documented_command_is_classified`
fails, so a new command in the docs is a decision, not an accident:

- CHEAP (run here, from the project root, with the venv's bin first on PATH, exit code 0 asserted): help
  pages, model summaries, a label audit as JSON, one prediction... seconds each;
- EXPENSIVE (not run here: they build, train, evaluate a whole benchmark or need the Prefect services; the
  walk through the docs runs them by hand), each pattern with its reason;
- a placeholder command: it names an ALL-CAPS word listed in PLACEHOLDERS (a value the user must choose,
  such as HOST), and only those; an ALL-CAPS word that is not listed fails the classification.

KNOWN_FAILURES holds the cheap commands that fail today, each with the reason (strict xfail, so a fixed
command must leave the list). A command's outputs go where the docs send them (`runs/`, ignored by git).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
COMMAND_START = ("r3fa ", ".venv/bin/", "make ", "python", "curl ", "eval ", "export ", "torchrun ")
TIMEOUT = 600

CHEAP = [
    r"--help\b",
    r"^(\.venv/bin/)?r3fa --version$",
    r"^(\.venv/bin/)?r3fa model (list|summary)\b",
    r"^(\.venv/bin/)?r3fa labels audit \.\./shared/data/aflw2000_3d --format json$",
    r"^(\.venv/bin/)?r3fa predict \.\./shared/data/aflw2000_3d/image00002\.jpg\b",
    r"^(\.venv/bin/)?r3fa predict \.\./shared/data/faces_68pts\b",
    r"^export [A-Z_]+=\S+$",
    r"^(\.venv/bin/)?r3fa synth preview \.\./shared/data/aflw2000_3d/image00002\.jpg\b",
]
EXPENSIVE = {
    r"^make (demo|bench)\b": "the whole job or the benchmarks: minutes",
    r"^make test\b": "the whole test suite",
    r"^make (server|worker|services|services-stop|deploy)\b": "starts, stops or deploys to the Prefect services",
    r"prefect_services\.py|(^|\$\()(\.venv/bin/)?prefect |api/health": "needs the Prefect services (docs/team.md walk)",
    r"json\.tool runs/": "reads the output of a Prefect run",
    r"\br3fa (shards|fit|eval|demo|train|experiment|data) ": "builds, fits, trains or evaluates: minutes",
    r"\br3fa bfm build\b": "rebuilds the 3DMM assets from the 3DDFA release",
    r"\br3fa bfm info assets/": "reads an asset the build command writes",
    r"\br3fa labels audit /data/": "a full 300W-LP audit (the data is not on this machine)",
    r"torchrun|-m r3fa\.training|train_flow\(": "trains a model",
}
PLACEHOLDERS = {
    "HOST": "the Dask scheduler's host",
    "IMAGE_OR_DIR": "an image or a folder of the user's",
    "FILE": "a landmarks file of the user's",
    "NAME": "a model name",
    "PATH": "a checkpoint of the user's",
    "N": "a number the user picks",
    "X": "an output folder the user picks",
    "DIR": "an output folder the user picks",
}
KNOWN_FAILURES: dict[str, str] = {}  # pattern -> why it fails; empty: every cheap documented command runs

CAPS_WORD = re.compile(r"(?<![$\w])[A-Z][A-Z_]*(?![\w=])")


def documented_commands() -> list[tuple[str, str]]:
    """(file name, command) of every command in the docs' code blocks, in document order."""
    found = []
    for md in DOCS:
        for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", md.read_text(), flags=re.M | re.S):
            if lang and lang not in SHELL_BLOCKS:
                continue
            for line in block.replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#\s.*$", "", re.sub(r"\s+", " ", line)).strip()
                if command and not command.startswith("#") and (lang or command.startswith(COMMAND_START)):
                    found.append((md.name, command))
    return found


def placeholders(command: str) -> set[str]:
    """The ALL-CAPS words of `command` that are not variables (`NAME=` or `$NAME`)."""
    return set(CAPS_WORD.findall(command))


def classify(command: str) -> str:
    """`cheap`, `expensive`, `placeholder`, or why the command cannot be classified."""
    caps = placeholders(command)
    if caps - PLACEHOLDERS.keys():
        return f"unlisted placeholder(s) {sorted(caps - PLACEHOLDERS.keys())}"
    if any(re.search(pattern, command) for pattern in EXPENSIVE):
        return "expensive"
    if caps:
        return "placeholder"
    if any(re.search(pattern, command) for pattern in CHEAP):
        return "cheap"
    return "neither CHEAP nor EXPENSIVE"


COMMANDS = documented_commands()


def test_the_docs_have_commands() -> None:
    assert len(COMMANDS) > 20 and {"README.md", "team.md"} <= {name for name, _ in COMMANDS}


def test_every_documented_command_is_classified() -> None:
    unclassified = {f"{name}: {cmd}": kind for name, cmd in COMMANDS
                    if (kind := classify(cmd)) not in ("cheap", "expensive", "placeholder")}  # fmt: skip
    assert not unclassified, unclassified


def _cases() -> list:
    cases = []
    for name, command in dict.fromkeys(COMMANDS):
        if classify(command) != "cheap":
            continue
        reason = next((why for pattern, why in KNOWN_FAILURES.items() if re.search(pattern, command)), None)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        cases.append(pytest.param(command, id=f"{name}: {command[:80]}", marks=marks))
    return cases


@pytest.mark.parametrize("command", _cases())
def test_cheap_documented_command_runs(command: str) -> None:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )  # fmt: skip
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
