"""How fast is face profiling? Accepted 120x120 views per second on one core, and what 250k costs.

The paper's mix needs 250,000 synthetic faces; the target (issue 15) is at least 100 accepted views/s per
core. This runs the dataset builder's unit of work, `pipelines.synthesis_stage.synthesize_sample`, in one
process with every math library pinned to one thread, over AFLW2000-3D sources and the mix's yaw schedule
(`synthesis_jobs`), a source's views one after the other as the builder makes them. Reading the sources (JPEG decode +
.mat) is timed apart: a per-source build reads a source once for its `profiles_per_image` views, so its cost
is reported per view as well. Rates are per CPU-second of this process (the wall clock is printed too: on a
shared machine it also counts other jobs' time slices). The extrapolation assumes the per-core rate scales
linearly with cores (independent sources).

A source's views share its view-independent geometry (`r3fa.profiling.synthesize.source_geometry`, cached
per process). `--scatter` visits the jobs in a shuffled order instead, so consecutive views come from
different sources and every view pays for its source's geometry: the cost of a builder that scatters a
source's views over the shards.

To time an older tree with this script, put it first on the path: `PYTHONPATH=/path/to/old/tree`.

Example:
    .venv/bin/python bench/bench_profiling.py --sources 100 --profiles-per-image 4
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.synthesis_stage import SynthesisConfig, synthesis_jobs, synthesize_sample  # noqa: E402
from r3fa.io import BadInputError  # noqa: E402
from r3fa.paths import data_root  # noqa: E402
from r3fa.readers import iter_aflw2000, load_source_sample  # noqa: E402

TOTAL = 250_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=60, help="AFLW2000-3D images used as sources")
    parser.add_argument("--profiles-per-image", type=int, default=4, help="views per source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=5, help="untimed samples first (model loading, caches)")
    parser.add_argument("--scatter", action="store_true", help="shuffle the jobs: no two views of a source in a row")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    items = list(iter_aflw2000(data_root() / "aflw2000_3d"))[:: max(1, 2000 // args.sources)][: args.sources]
    start = time.process_time()
    bases = [load_source_sample(item) for item in items]
    read_s = (time.process_time() - start) / len(items)

    config = SynthesisConfig(count=len(items) * args.profiles_per_image, profiles_per_image=args.profiles_per_image)
    # the builder makes all the candidates of a source together (`pipelines.samples.make_samples`), so a
    # source's views follow one another; `synthesis_jobs` lists them round robin over the sources
    jobs = sorted(synthesis_jobs(config, len(items), args.seed), key=lambda job: job[0])
    if args.scatter:
        jobs = [jobs[k] for k in np.random.default_rng(args.seed).permutation(len(jobs))]
    for source, increment in jobs[: args.warmup]:
        _attempt(bases[source], items[source], increment, config)
    start, start_cpu = time.perf_counter(), time.process_time()
    rejected = sum(not _attempt(bases[s], items[s], d, config) for s, d in jobs)
    wall_s = (time.perf_counter() - start) / len(jobs)
    synth_s = (time.process_time() - start_cpu) / len(jobs)  # CPU time: robust to other jobs on a shared box
    accepted = 1.0 - rejected / len(jobs)
    per_sample = (synth_s + read_s / args.profiles_per_image) / accepted  # per accepted sample

    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs; this run: 1 thread")
    order = "shuffled (--scatter)" if args.scatter else "a source's views in a row"
    print(f"sources: {len(items)} AFLW2000-3D images x {args.profiles_per_image} views = {len(jobs)} attempts "
          f"({order}), {rejected} rejected ({100 * rejected / len(jobs):.1f} %)")
    print(f"synthesis attempts:   {1 / synth_s:6.1f} /s/core ({1000 * synth_s:.1f} ms CPU each, rejections included; "
          f"wall clock {1000 * wall_s:.1f} ms)")
    print(f"accepted views, source reading included: {1 / per_sample:6.1f} views/s/core "
          f"(read {1000 * read_s:.1f} ms per source)")
    for cores in (1, 2, 64):
        hours = TOTAL * per_sample / cores / 3600
        print(f"250k views on {cores:2d} cores: {hours:6.2f} h")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _attempt(base, item, increment: float, config: SynthesisConfig) -> bool:
    """One synthetic view; False when it was rejected (rejections cost time too, so they count)."""
    try:
        synthesize_sample(base, item, increment, "bench", config)
    except BadInputError:
        return False
    return True


if __name__ == "__main__":
    main()
