"""How fast does the shard builder go, does it scale with Dask workers, and does its memory stay flat?

Measures, on real AFLW2000-3D images (they stand in for 300W-LP: same 450x450 JPEGs and `.mat` labels):

1. end-to-end samples/s of ingest + augmentation + JPEG + tar/idx/Parquet writing through Dask, with 1 and 2
   single-threaded workers of a `LocalCluster` started before the clock (so cluster start-up is excluded; it
   is reported separately), at two dataset sizes;
2. peak RSS of each worker process (`ru_maxrss`, asked from the workers after the build) and of the driver,
   at both sizes: flat memory means the peak does not grow with the number of samples;
3. the in-process cost per sample of each stage (augmented copy vs face-profiling view), so that the 680k
   mix (430k real + 250k synthetic) can be extrapolated from the measured rate and scaling;
4. the codec floor (issue 15): one thread, 150 images x 3 records, in one process, alternating rounds of
   (a) read + decode each 450x450 JPEG once, then 3 x (warp to 120x120 + JPEG encode q95),
   (b) the old per-record loop (each record decodes and labels its source again, nothing written),
   (c) `build_shards(..., workers=0)` (plan + ingest + augment + parts + shards + manifest, no synthesis),
       with 128 samples per shard (5 shards: the setting the issue measured) and with the default shard size
       (`shard_size_mb` 256: one shard per split, as a real build's ~25k-sample shards amortise their fixed
       cost of files, fsyncs and a Parquet writer); the build decodes at half size the JPEGs whose crops
       all step 2 or more source pixels (`half_size_decode`, the default; the floor decodes every image whole),
   (d) the build of (c) at 128 samples per shard with `half_size_decode: false` (every image decoded whole),
   and the ratios (c) / (a) and (d) / (a).

5. with `--breakdown` (alone): where the build of (c) spends its wall time: OpenCV's codec and pixel calls,
   fsync waits and the build's stages, timed by wrapping them (milliseconds, best of the rounds).

Example:
    .venv/bin/python bench/bench_build.py --sizes 150 600 --workers 1 2 --markdown /tmp/build.md
    .venv/bin/python bench/bench_build.py --floor-only   # just item 4
    .venv/bin/python bench/bench_build.py --breakdown    # just item 5
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as Dask gives its workers (set before numpy loads)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.build import build_shards  # noqa: E402
from pipelines.mix import MixConfig  # noqa: E402
from pipelines.plan import make_plan  # noqa: E402
from pipelines.samples import make_samples  # noqa: E402
from r3fa.readers import CropTransform, discover_aflw2000  # noqa: E402
from r3fa.paths import data_root  # noqa: E402

REAL_680K, SYNTHETIC_680K = 430_000, 250_000


def _config(images: int, synthesis: int = 0) -> MixConfig:
    return MixConfig(
        name="bench",
        sources=[{"kind": "aflw2000_3d", "root": "aflw2000_3d", "limit": images}],
        augmentation={"copies_per_image": 3},
        synthesis={"stage": "face_profiling", "count": synthesis} if synthesis else None,
        samples_per_shard=128,
        val_fraction=0.05,
    )


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that over fork + exec, so a spawned
    worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def build_rate(images: int, workers: int, scratch: Path) -> dict:
    """One Dask build of `images` images x 3 copies: samples/s and the workers' peak RSS."""
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        cluster_s = time.perf_counter() - started
        out = scratch / f"n{images}-w{workers}"
        start = time.perf_counter()
        summary = build_shards(_config(images), out, scheduler=cluster.scheduler_address)
        seconds = time.perf_counter() - start
        peaks = sorted(client.run(_peak_rss_mb).values())
    shutil.rmtree(out)
    done = summary.samples + summary.rejected
    return {"images": images, "workers": workers, "samples": done, "seconds": round(seconds, 2),
            "samples_per_s": round(done / seconds, 1), "cluster_start_s": round(cluster_s, 2),
            "worker_peak_rss_mb": [round(p) for p in peaks]}  # fmt: skip


def stage_costs(n: int) -> dict:
    """Mean in-process milliseconds per planned sample of each stage (no writing; the first sample of each
    stage, which loads the models, is left out)."""
    config = _config(60, synthesis=n + 1)
    specs = make_plan(config).candidates
    costs = {}
    for stage in ("augment", "synthesis"):
        warm_up, *chosen = [s for s in specs if s.stage == stage][: n + 1]
        make_samples([[warm_up]], config)
        start = time.perf_counter()
        for spec in chosen:
            make_samples([[spec]], config)  # one record: its own decode and label
        costs[stage] = round(1000 * (time.perf_counter() - start) / len(chosen), 1)
    return costs


def plan_680k() -> dict:
    """Time and driver memory of planning a 680k mix: the 2000 AFLW2000-3D images x 215 copies (430k) +
    250k face-profiling jobs stand in for 300W-LP's 122,450 x 3.512 + 250k (same number of planned samples)."""
    import psutil

    config = MixConfig(
        name="plan",
        sources=[{"kind": "aflw2000_3d", "root": "aflw2000_3d"}],
        augmentation={"copies_per_image": 215},
        synthesis={"stage": "face_profiling", "count": SYNTHETIC_680K},
    )
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    plan = make_plan(config)
    seconds = time.perf_counter() - start
    grown = psutil.Process().memory_info().rss - before
    return {"samples": plan.n_samples, "parts": len(plan.parts(config.name, 64)), "seconds": round(seconds, 1),
            "rss_growth_mb": round(grown / 2**20)}  # fmt: skip


def _floor_pass(paths: list[str], copies: int, quality: int) -> int:
    """(a): read + decode each JPEG once, then `copies` x (warp to 120x120 + encode); returns records made."""
    rng = np.random.default_rng(0)
    made = 0
    for path in paths:
        image = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        for _ in range(copies):
            x, y, side = rng.uniform(100, 150), rng.uniform(100, 150), rng.uniform(180, 240)
            crop = cv2.warpAffine(image, CropTransform.from_roi(np.array([x, y, x + side, y + side])).matrix,
                                  (120, 120), flags=cv2.INTER_LINEAR)  # fmt: skip
            ok, _ = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
            made += int(ok)
    return made


def _per_record_pass(config: MixConfig) -> int:
    """(b): every planned record decodes and labels its source again (the builder before issue 15)."""
    return sum(1 for spec in make_plan(config).candidates for _ in make_samples([[spec]], config))


def codec_floor(images: int, rounds: int, scratch: Path) -> dict:
    """Item 4: the floor, the per-record loop and the build, alternating for `rounds` rounds in this process
    (one OpenCV thread); the best round of each (least disturbed by other jobs) and the ratio build / floor,
    in wall-clock time and in CPU time of this process (`time.process_time`: what other jobs on a shared
    machine inflate least; it leaves out the build's fsync waits, which the floor does not have). Also the
    median over rounds of each round's ratio: a round's floor and build run a second apart, under the same
    load, so the median moves less than the ratio of two best rounds."""
    cv2.setNumThreads(1)
    config = _config(images)  # 3 records per image, no synthesis
    default_shards = config.model_copy(update={"samples_per_shard": None})  # shard_size_mb's count: one shard per split
    full_decode = config.model_copy(update={"half_size_decode": False})
    paths = [item.image_path for item in discover_aflw2000(data_root() / "aflw2000_3d")[:images]]
    names = ("floor", "per_record", "build", "build_default_shards", "build_full_decode")
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu_rates: dict[str, list[float]] = {name: [] for name in names}

    def timed(name: str, work) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        n = work()
        rates[name].append(n / (time.perf_counter() - wall))
        cpu_rates[name].append(n / (time.process_time() - cpu))

    for index in range(rounds):
        out = scratch / f"floor-{index}"
        timed("floor", lambda: _floor_pass(paths, 3, config.jpeg_quality))
        timed("per_record", lambda: _per_record_pass(config))
        timed("build", lambda: _built_samples(build_shards(config, out, workers=0)))
        shutil.rmtree(out)
        timed("build_default_shards", lambda: _built_samples(build_shards(default_shards, out, workers=0)))
        shutil.rmtree(out)
        timed("build_full_decode", lambda: _built_samples(build_shards(full_decode, out, workers=0)))
        shutil.rmtree(out)
    best = {k: round(max(v), 1) for k, v in rates.items()}
    best_cpu = {k: round(max(v), 1) for k, v in cpu_rates.items()}
    return {"images": images, "records": 3 * images, "rounds": rounds, "best_samples_per_s": best,
            "all_samples_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "ratio_build_to_floor": round(best["build"] / best["floor"], 3),
            "ratio_rounds": [round(b / f, 3) for b, f in zip(rates["build"], rates["floor"])],
            "ratio_median": round(statistics.median(b / f for b, f in zip(rates["build"], rates["floor"])), 3),
            "ratio_median_cpu": round(statistics.median(b / f for b, f in zip(cpu_rates["build"], cpu_rates["floor"])), 3),
            "best_cpu_samples_per_s": best_cpu,
            "ratio_build_to_floor_cpu": round(best_cpu["build"] / best_cpu["floor"], 3),
            "ratio_default_shards_to_floor": round(best["build_default_shards"] / best["floor"], 3),
            "ratio_default_shards_to_floor_cpu": round(best_cpu["build_default_shards"] / best_cpu["floor"], 3),
            "ratio_default_shards_median": round(statistics.median(
                b / f for b, f in zip(rates["build_default_shards"], rates["floor"])), 3),
            "ratio_full_decode_to_floor": round(best["build_full_decode"] / best["floor"], 3),
            "ratio_full_decode_to_floor_cpu": round(best_cpu["build_full_decode"] / best_cpu["floor"], 3)}  # fmt: skip


def _built_samples(summary) -> int:
    return summary.samples + summary.rejected


# what `breakdown` times: OpenCV's codec and pixel calls, fsync, and the build's stages (module, attribute)
_CODEC_CALLS = ("imdecode", "imencode", "warpAffine", "GaussianBlur", "randn", "transform", "add", "mean")
_STAGES = (("pipelines.build", "make_plan"), ("pipelines.samples", "ingest"), ("pipelines.samples", "make_copies"),
           ("pipelines.samples", "encode_record"), ("pipelines.build", "build_shard"),
           ("pipelines.build", "make_manifest"))  # fmt: skip


@contextlib.contextmanager
def _timers(targets: list[tuple[object, str, str]], totals: dict[str, float]) -> Iterator[None]:
    """Wrap each (owner, attribute, label) with a wall-clock timer adding into `totals[label]`; restore after."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]

    def timed(fn, label):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

        return call

    for (owner, name, fn), (_, _, label) in zip(originals, targets):
        setattr(owner, name, timed(fn, label))
    try:
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def breakdown(images: int, rounds: int, scratch: Path) -> dict:
    """Where a `build_shards(workers=0)` of `images` x 3 records spends its wall time (best of `rounds` for each
    entry): OpenCV's codec and pixel calls (all of them, the photometric ops' included), fsync waits, and the
    stages (which contain the calls). The timers add ~1 us a call (~3,000 calls)."""
    import importlib

    cv2.setNumThreads(1)
    config = _config(images)
    targets = [(cv2, name, f"cv2.{name}") for name in _CODEC_CALLS] + [(os, "fsync", "fsync")]
    targets += [(importlib.import_module(module), name, name) for module, name in _STAGES]
    best: dict[str, float] = {}
    for index in range(rounds):
        totals: dict[str, float] = {}
        out = scratch / f"breakdown-{index}"
        with _timers(targets, totals):
            start = time.perf_counter()
            build_shards(config, out, workers=0)
            totals["build"] = time.perf_counter() - start
        shutil.rmtree(out)
        totals["codecs"] = sum(v for k, v in totals.items() if k.startswith("cv2."))
        best = {k: min(v, best.get(k, v)) for k, v in totals.items()}
    return {k: round(1000 * v, 1) for k, v in sorted(best.items(), key=lambda kv: -kv[1])}


def markdown(results: dict) -> str:
    """The results as the build section of docs/benchmarks.md."""
    rows = results["builds"]
    lines = [
        "## Shard builder: throughput, scaling, memory",
        "",
        f"{results['date']}, {results['machine']}. Command: `{results['command']}`",
        "",
        "Real AFLW2000-3D images (450x450 JPEG + `.mat`, standing in for 300W-LP), 3 records per image "
        "(plain crop + 2 augmented copies), 128 samples per shard, JPEG q95; Dask `LocalCluster` with "
        "single-threaded workers started before the clock.",
        "",
        "| images | samples | workers | seconds | samples/s | worker peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['images']} | {r['samples']} | {r['workers']} | {r['seconds']} | {r['samples_per_s']} | "
              f"{', '.join(map(str, r['worker_peak_rss_mb']))} |" for r in rows]  # fmt: skip
    costs, ex, floor = results["stage_ms"], results["extrapolation"], results["floor"]
    lines += [
        "",
        f"Codec floor (one thread, {floor['images']} images x 3 records, {floor['rounds']} alternating rounds, best "
        f"round): floor {floor['best_samples_per_s']['floor']} samples/s, per-record loop "
        f"{floor['best_samples_per_s']['per_record']}, `build_shards(workers=0)` {floor['best_samples_per_s']['build']}: "
        f"build / floor = {floor['ratio_build_to_floor']} (per round: {floor['ratio_rounds']}); in CPU time: floor "
        f"{floor['best_cpu_samples_per_s']['floor']}, build {floor['best_cpu_samples_per_s']['build']} samples/s of CPU, "
        f"build / floor = {floor['ratio_build_to_floor_cpu']}; with the default shard size: build / floor = "
        f"{floor['ratio_default_shards_to_floor']} (CPU time {floor['ratio_default_shards_to_floor_cpu']}); every image "
        f"decoded whole (`half_size_decode: false`): build / floor = {floor['ratio_full_decode_to_floor']} (CPU time "
        f"{floor['ratio_full_decode_to_floor_cpu']})",
        "",
        f"- scaling {min(r['workers'] for r in rows)} -> {max(r['workers'] for r in rows)} workers (largest size): "
        f"x{results['scaling']:.2f}; load average {results['load'][0]:.1f} before and {results['load'][1]:.1f} after "
        f"the runs on {os.cpu_count()} CPUs (other jobs share this machine: with a load above the CPU count a second "
        "worker has no idle core to use, and the ratio says little)",
        f"- planning a 680k mix ({results['plan']['samples']} samples, {results['plan']['parts']} phase-1 parts of 64 sources): "
        f"{results['plan']['seconds']} s, driver RSS +{results['plan']['rss_growth_mb']} MB (the plan is the only "
        "per-sample state the driver holds)",
        f"- driver peak RSS over the four builds: {results['driver_peak_rss_mb']:.0f} MB; LocalCluster start: "
        f"{rows[0]['cluster_start_s']} s",
        f"- in-process cost per sample: augmented copy {costs['augment']} ms, face-profiling view "
        f"{costs['synthesis']} ms (ingest included in both; one BLAS thread, as in the Dask workers)",
        f"- extrapolated 680k mix (430k real + 250k synthetic, the synthetic cost ratio "
        f"{ex['synthetic_cost_ratio']:.2f}): {ex['hours_measured_workers']:.1f} h with {ex['workers']} workers here, "
        f"{ex['hours_16_workers']:.1f} h with 16 workers if each keeps the per-worker rate measured at "
        f"{ex['workers']} workers (an estimate: disk and memory bandwidth are not measured here)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[150, 600], help="images per build (two sizes)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts")
    parser.add_argument("--stage-samples", type=int, default=40, help="samples per stage for the stage costs")
    parser.add_argument("--markdown", type=Path, help="write the results section to this file")
    parser.add_argument("--floor-images", type=int, default=150, help="images of the codec-floor comparison")
    parser.add_argument("--floor-rounds", type=int, default=3, help="alternating rounds of the codec-floor comparison")
    parser.add_argument("--floor-only", action="store_true", help="run only the codec-floor comparison")
    parser.add_argument("--breakdown", action="store_true",
                        help="run only the timed build: where its wall time goes (ms, best of --floor-rounds)")
    args = parser.parse_args()

    if args.breakdown:
        with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as scratch:
            print(json.dumps(breakdown(args.floor_images, args.floor_rounds, Path(scratch)), indent=1))
        return
    if args.floor_only:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
            floor = codec_floor(args.floor_images, args.floor_rounds, Path(scratch))
        print(json.dumps({**floor, "load_before": load, "load_after": os.getloadavg()[0]}, indent=1))
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch:
        builds = [build_rate(size, w, Path(scratch)) for size in args.sizes for w in args.workers]
    driver_peak = _peak_rss_mb()
    plan = plan_680k()
    largest = [r for r in builds if r["images"] == max(args.sizes)]
    rate = {r["workers"]: r["samples_per_s"] for r in largest}
    scaling = rate[max(rate)] / rate[min(rate)]
    costs = stage_costs(args.stage_samples)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        floor = codec_floor(args.floor_images, args.floor_rounds, Path(scratch))
    ratio = costs["synthesis"] / costs["augment"]
    per_worker = {w: r / w for w, r in rate.items()}
    efficiency = per_worker[max(rate)] / per_worker[min(rate)]  # per-worker rate kept when adding workers
    equivalent = REAL_680K + SYNTHETIC_680K * ratio  # the mix in augmented-sample units
    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}",
        "load": [load_before, os.getloadavg()[0]],
        "command": "python bench/bench_build.py " + " ".join(
            [f"--sizes {args.sizes[0]} {args.sizes[1]}", "--workers " + " ".join(map(str, args.workers))]),
        "plan": plan,
        "builds": builds,
        "scaling": scaling,
        "stage_ms": costs,
        "floor": floor,
        "driver_peak_rss_mb": driver_peak,
        "extrapolation": {
            "synthetic_cost_ratio": ratio,
            "workers": max(rate),
            "hours_measured_workers": equivalent / rate[max(rate)] / 3600,
            "hours_16_workers": equivalent / (16 * per_worker[min(rate)] * efficiency) / 3600,
        },
    }  # fmt: skip
    print(json.dumps(results, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(results))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
