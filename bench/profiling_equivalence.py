"""Does a new face-profiling implementation make the same samples as an old one, and how much faster is it?

Runs `pipelines.synthesis_stage.synthesize_sample` of two source trees (the old one given by `--old`, e.g. a
`git worktree` of an earlier commit; the new one is this file's tree) over the same AFLW2000-3D sources and
the same seeded job list (`synthesis_jobs`, the bench's schedule, a source's views in a row as the builder
makes them), each in its own subprocess with `PYTHONPATH` set to its tree and every math library pinned to one
thread. Each subprocess writes every view's crop, 62-d label, hole fraction and accept/reject decision to an
`.npz`; this script compares them:

- images: mean absolute difference per pixel (grey levels, over the 120x120x3 crops) of the views both
  accepted; its mean over views must be < 1 grey level;
- labels: the largest absolute difference of the 62-d params (identical, or float32 rounding);
- decisions: views accepted by one tree and rejected by the other (holes near the threshold), counted.

Speed: the trees run alternately (old, new, old, new, ... `--rounds` times), so both see the same machine
load; each reports the CPU seconds of its synthesis loop (source reading excluded), the rates are accepted
views per CPU-second, and the ratio is new / old over all rounds.

Example:
    git worktree add /tmp/r3fa-old <commit>
    .venv/bin/python bench/profiling_equivalence.py --old /tmp/r3fa-old --sources 100 --rounds 2
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

NEW_TREE = Path(__file__).resolve().parents[1]
MAX_MEAN_GREY_DIFF = 1.0


def dump(sources: int, profiles_per_image: int, seed: int, out: Path) -> None:
    """Synthesise the job list with whichever tree is first on `sys.path`; write views and CPU time to `out`."""
    import cv2  # the project's imports are made here, in the subprocess whose PYTHONPATH picks the tree

    from pipelines.synthesis_stage import SynthesisConfig, synthesis_jobs, synthesize_sample
    from r3fa.io import BadInputError
    from r3fa.paths import data_root
    from r3fa.readers import iter_aflw2000, load_source_sample

    cv2.setNumThreads(1)
    items = list(iter_aflw2000(data_root() / "aflw2000_3d"))[:: max(1, 2000 // sources)][:sources]
    bases = [load_source_sample(item) for item in items]
    config = SynthesisConfig(count=len(items) * profiles_per_image, profiles_per_image=profiles_per_image)
    jobs = sorted(synthesis_jobs(config, len(items), seed), key=lambda job: job[0])  # as the builder: by source
    crops = np.zeros((len(jobs), config.output_size, config.output_size, 3), np.uint8)
    params = np.full((len(jobs), 62), np.nan, np.float32)
    accepted = np.zeros(len(jobs), bool)
    try:
        synthesize_sample(bases[0], items[0], 10.0, "warmup", config)  # model loading
    except BadInputError:
        pass
    start = time.process_time()
    for n, (source, increment) in enumerate(jobs):
        try:
            record = synthesize_sample(bases[source], items[source], increment, f"view{n}", config)
        except BadInputError:
            continue
        crops[n], params[n], accepted[n] = record.crop, record.params, True
    cpu_s = time.process_time() - start
    np.savez(out, crops=crops, params=params, accepted=accepted, cpu_s=cpu_s, jobs=np.array(jobs))


def _run_tree(tree: Path, args: argparse.Namespace, out: Path) -> dict:
    from r3fa.paths import data_root

    env = dict(os.environ, PYTHONPATH=str(tree), R3FA_DATA=str(data_root()))  # both trees read the same data
    command = [sys.executable, str(Path(__file__).resolve()), "--dump", str(out), "--sources", str(args.sources),
               "--profiles-per-image", str(args.profiles_per_image), "--seed", str(args.seed)]
    subprocess.run(command, env=env, check=True, cwd=tree)
    with np.load(out) as z:
        return {name: z[name] for name in z.files}


def compare(old: dict, new: dict) -> dict:
    """Image, label and decision agreement of two dumps of the same job list."""
    if not np.array_equal(old["jobs"], new["jobs"]):
        raise SystemExit("the two trees made different job lists: not comparable")
    both = old["accepted"] & new["accepted"]
    if not both.any():
        raise SystemExit("no view was accepted by both trees: nothing to compare")
    diff = np.abs(old["crops"][both].astype(np.int16) - new["crops"][both].astype(np.int16))
    per_view = diff.reshape(int(both.sum()), -1).mean(axis=1)
    return {
        "views": len(both),
        "accepted_old": int(old["accepted"].sum()),
        "accepted_new": int(new["accepted"].sum()),
        "flipped_to_accept": int((new["accepted"] & ~old["accepted"]).sum()),
        "flipped_to_reject": int((old["accepted"] & ~new["accepted"]).sum()),
        "mean_abs_grey_diff": float(per_view.mean()),
        "worst_view_mean_abs_grey_diff": float(per_view.max()),
        "pixels_differing_fraction": float((diff > 0).mean()),
        "max_param_abs_diff": float(np.abs(old["params"][both] - new["params"][both]).max()),
        "identical_crops": int((per_view == 0).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, help="the old source tree (a git worktree of the earlier commit)")
    parser.add_argument("--sources", type=int, default=100, help="AFLW2000-3D images used as sources")
    parser.add_argument("--profiles-per-image", type=int, default=4, help="views per source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating old/new timing rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--dump", type=Path, default=None, help=argparse.SUPPRESS)  # the subprocess mode
    args = parser.parse_args()
    if args.dump is not None:
        dump(args.sources, args.profiles_per_image, args.seed, args.dump)
        return
    if args.old is None or not (args.old / "r3fa" / "profiling").is_dir():
        raise SystemExit("--old must be a source tree of this project (it has r3fa/profiling/)")

    rates: dict[str, list[float]] = {"old": [], "new": []}
    dumps: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, tree in (("old", args.old.resolve()), ("new", NEW_TREE)):
                result = _run_tree(tree, args, Path(tmp) / f"{name}{round_}.npz")
                rates[name].append(float(result["accepted"].sum() / result["cpu_s"]))
                dumps[name] = result  # every round makes the same views; the last one is compared
    report = compare(dumps["old"], dumps["new"])
    report.update(
        rounds=args.rounds,
        old_views_per_cpu_s=rates["old"],
        new_views_per_cpu_s=rates["new"],
        speedup=float(np.sum(rates["new"]) / np.sum(rates["old"])),
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if report["mean_abs_grey_diff"] >= MAX_MEAN_GREY_DIFF:
        raise SystemExit(f"images differ by {report['mean_abs_grey_diff']:.3f} grey levels on average")


if __name__ == "__main__":
    main()
