"""The paper's mix rehearsed at a fraction of its size: build, verify, read back, one loader epoch, extrapolate.

Issue 12's rehearsal: build `configs/mix/paper-68k.yaml` (1/10) over a 300W-LP-shaped stand-in tree
(`r3fa data standin-300wlp`), then measure every stage that a 680k run goes through:

1. stand-in: lay out the config's source tree if it is not there (`--standin-images`; idempotent);
2. plan: `pipelines.plan.make_plan` (planned real and synthetic samples, shards);
3. build: `r3fa shards build CONFIG --out OUT --workers W --format json`;
4. verify: `r3fa shards verify OUT --format json`;
5. read back with `webdataset` (every member, JPEGs decoded with OpenCV), DALI's own `fn.readers.webdataset`
   (with the `.idx` files; JPEG decode on the CPU) and DuckDB (the Parquet tables and rejected.parquet);
6. one epoch of the training loader (`r3fa.loaders.create_loader`, train split).

Each stage runs in a child process (this script with `--stage`, or the `r3fa` command) whose process tree is
sampled with psutil every `--interval` seconds: the driver's and each worker's peak RSS (`VmHWM` from
/proc, the kernel's own peak, read at each sample; a peak in the last interval before a process exits is
missed) and the tree's largest total RSS. Reported: wall time and samples/s per stage, peak RSS of driver and
workers, counts target vs planned vs delivered (real / synthetic), rejection reasons, shard sizes, and the
extrapolation of the build to the 680k mix on 16 and 64 cores.

The extrapolation is linear and says so: 680k / delivered x build seconds x W / cores, i.e. each core keeps
the per-worker rate measured here and the driver's serial parts (plan, input hash, manifest) grow with the
sample count; disk bandwidth and memory contention are not measured. On a machine shared with other jobs
(load average above the core count) every rate here is a lower bound.

Examples:
    .venv/bin/python bench/bench_rehearsal.py configs/mix/paper-6k8.yaml --out /tmp/rehearsal-6k8 \\
        --standin-images 1225 --workers 1 --json /tmp/rehearsal-6k8.json         # smoke test (1/100)
    .venv/bin/python bench/bench_rehearsal.py configs/mix/paper-68k.yaml --out /tmp/rehearsal-68k \\
        --standin-images 12245 --workers 2 --json /tmp/rehearsal-68k.json        # the rehearsal (1/10)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as Dask gives its workers (set before numpy loads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

from r3fa.shard_contract import IMAGE_EXT, PARAMS_EXT, load_manifest  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
R3FA = [sys.executable, "-c", "from cli.main import app; app()"]  # the `r3fa` command of this interpreter
PAPER_SAMPLES = 680_000
CORES = (16, 64)


# ----------------------------------------------------------------------------- sampling a process tree
def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, (0, 0) once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0, 0.0
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields.get("VmRSS", "0 kB").split()[0]) / 1024, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024


def _label(process: psutil.Process) -> str:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "?"
    markers = (("spawn_main", "worker"), ("resource_tracker", "resource_tracker"), ("forkserver", "forkserver"))
    for marker, label in markers:
        if marker in cmdline:
            return label
    return process.name()


def run_sampled(command: list[str], interval: float) -> dict:
    """Run `command`, sampling its process tree; returns rc, seconds, stdout, stderr tail and memory peaks."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=PROJECT, text=True)
        root = psutil.Process(proc.pid)
        peaks: dict[int, dict] = {}
        tree_peak = 0.0
        while proc.poll() is None:
            try:
                members = [root, *root.children(recursive=True)]
            except psutil.Error:
                members = [root]
            total = 0.0
            for member in members:
                rss, hwm = _memory_mb(member.pid)
                total += rss
                entry = peaks.setdefault(member.pid, {"label": "driver" if member.pid == proc.pid else _label(member)})
                entry["peak_mb"] = max(entry.get("peak_mb", 0.0), hwm)
            tree_peak = max(tree_peak, total)
            time.sleep(interval)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    driver = peaks.pop(proc.pid, {"peak_mb": 0.0})["peak_mb"]
    children = sorted((round(p["peak_mb"]), p["label"]) for p in peaks.values() if p.get("peak_mb"))
    workers = [mb for mb, label in children if label != "resource_tracker"]  # Dask or DataLoader workers
    return {
        "rc": proc.returncode,
        "seconds": round(seconds, 2),
        "stdout": stdout,
        "stderr_tail": stderr[-2000:],
        "driver_peak_mb": round(driver),
        "worker_peak_mb": max(workers, default=0),
        "children_peak_mb": children,
        "tree_peak_mb": round(tree_peak),
    }


def _json_stage(name: str, result: dict) -> dict:
    """A stage's JSON output (the last line of stdout that parses) merged with its timing and memory."""
    if result["rc"] != 0:
        raise SystemExit(f"stage {name} failed (exit {result['rc']}):\n{result['stderr_tail']}")
    text = result.pop("stdout")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = json.loads(text.strip().splitlines()[-1])
    if "self_peak_mb" in payload:
        result["driver_peak_mb"] = max(result["driver_peak_mb"], payload.pop("self_peak_mb"))
    return {**result, "result": payload}


# ----------------------------------------------------------------------------- child stages (one process each)
def stage_plan(config_path: Path) -> dict:
    from pipelines.mix import load_mix
    from pipelines.plan import make_plan

    config = load_mix(config_path)
    plan = make_plan(config)
    stages = Counter(spec.stage for spec in plan.candidates)
    synthesis = config.synthesis_config()
    return {
        "items": len(plan.items),
        "rejected_inputs": len(plan.rejected),
        "planned_real": stages["augment"],
        "planned_synthetic": stages["synthesis"],
        "target_real": plan.target("augment") or round(len(plan.items) * config.augmentation.copies_per_image),
        "target_synthetic": plan.target("synthesis") or (synthesis.count if synthesis else 0),
        "samples_per_shard": config.shard_samples(),
    }


def stage_webdataset(out: Path) -> dict:
    import cv2
    import numpy as np
    import webdataset as wds

    tars = sorted(str(p) for p in out.glob("*.tar"))
    samples = members = 0
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        members += sum(1 for k in sample if not k.startswith("__"))
        if cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR) is None:
            raise RuntimeError(f"undecodable jpg in {sample['__key__']}")
        samples += 1
    return {"samples": samples, "members": members, "tars": len(tars)}


def stage_dali(out: Path, threads: int) -> dict:
    try:
        from nvidia.dali import fn, pipeline_def, types
    except (ImportError, OSError) as err:
        return {"skipped": f"DALI not importable ({type(err).__name__})"}
    tars = sorted(out.glob("*.tar"))
    batch = 256

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None)
    def read():
        jpegs, params = fn.readers.webdataset(
            paths=[str(p) for p in tars],
            index_paths=[str(p.with_suffix(".idx")) for p in tars],
            ext=[IMAGE_EXT, PARAMS_EXT],
            dtypes=[types.UINT8, types.FLOAT],
            missing_component_behavior="error",
            name="reader",
        )
        return fn.decoders.image(jpegs, device="cpu", output_type=types.BGR), params

    pipe = read()
    pipe.build()
    total = pipe.epoch_size("reader")
    samples = 0
    while samples < total:
        images, params = pipe.run()
        samples += min(len(images), total - samples)
    return {"samples": samples, "tars": len(tars), "threads": threads}


def stage_duckdb(out: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    tables = "read_parquet([" + ", ".join(f"'{out / s.parquet}'" for s in load_manifest(out).shards) + "])"
    columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {tables}").fetchall()}
    by = [c for c in ("split", "synthetic") if c in columns]
    rows = con.execute(f"SELECT {', '.join(by)}, count(*) FROM {tables} GROUP BY ALL ORDER BY ALL").fetchall()
    samples = sum(row[-1] for row in rows)
    reasons: list = []
    rejected = out / "rejections" / "rejected.parquet"
    if rejected.is_file():
        cols = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{rejected}')").fetchall()}
        # numbers in a reason become '#' so that rows of one kind group ("holes in the face # > #")
        reason = "regexp_replace(reason, '[-+]?[0-9][0-9.e+-]*', '#', 'g')" if "reason" in cols else "'?'"
        keys = [c for c in ("stage",) if c in cols]
        reasons = con.execute(
            f"SELECT {', '.join([*keys, reason])} AS why, count(*) FROM read_parquet('{rejected}') "
            "GROUP BY ALL ORDER BY count(*) DESC"
        ).fetchall()
    return {
        "samples": samples,
        "by": by,
        "counts": [list(map(_plain, row)) for row in rows],
        "rejections": [list(map(_plain, row)) for row in reasons],
    }


def _plain(value: object) -> object:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def stage_loader(out: Path, kind: str, batch_size: int, threads: int) -> dict:
    from r3fa.loaders import create_loader

    loader = create_loader(out, "train", batch_size, kind=kind, epoch=0, num_threads=threads)
    samples = batches = 0
    start = time.perf_counter()
    first = None
    for batch in loader:
        samples += batch["image"].shape[0]
        batches += 1
        first = first or time.perf_counter()
    end = time.perf_counter()
    steady = (samples - batch_size) / (end - first) if first and end > first and batches > 1 else None
    return {"kind": kind, "samples": samples, "batches": batches, "steady_samples_per_s": steady and round(steady, 1)}


# ----------------------------------------------------------------------------- the driver
def _config_root(config_path: Path) -> Path:
    from pipelines.mix import load_mix

    sources = [s for s in load_mix(config_path).sources if s.kind == "300wlp"]
    if len(sources) != 1:
        raise SystemExit(f"{config_path}: expected one 300wlp source (the stand-in), found {len(sources)}")
    return sources[0].resolved_root()


def ensure_standin(config_path: Path, images: int | None) -> dict:
    """Lay out the config's stand-in tree (idempotent), or check that it is there."""
    from r3fa.standin import POOL_DIR, STATE_FILE, write_standin

    root = _config_root(config_path)
    state = root / POOL_DIR / STATE_FILE
    if images is None:
        if not state.is_file():
            raise SystemExit(f"{root}: no stand-in tree; pass --standin-images N to lay it out")
        images = json.loads(state.read_text())["images"]
    start = time.perf_counter()
    summary = write_standin(root, images)
    return {"root": str(root), "images": summary.images, "unchanged": summary.unchanged,
            "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip


def shard_sizes(out: Path) -> dict:
    manifest = load_manifest(out)
    shards = [{"file": s.file, "split": s.split, "samples": s.count,
               "mb": round((out / s.file).stat().st_size / 1e6, 1)} for s in manifest.shards]  # fmt: skip
    total_bytes = sum((out / s.file).stat().st_size for s in manifest.shards)
    samples = sum(s["samples"] for s in shards)
    return {"shards": shards, "bytes_per_sample": round(total_bytes / max(samples, 1)),
            "configured_sample_bytes": manifest.config.get("sample_bytes")}  # fmt: skip


def _rate(samples: int | None, seconds: float) -> float | None:
    return round(samples / seconds, 1) if samples and seconds > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a mix config over a stand-in tree (configs/mix/paper-68k.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="shard-set folder (must not hold a build yet)")
    parser.add_argument("--standin-images", type=int, help="lay out the config's stand-in with this many images")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers of the build")
    parser.add_argument("--threads", type=int, default=2, help="DALI threads / loader workers")
    parser.add_argument("--batch-size", type=int, default=128, help="loader batch size")
    parser.add_argument("--loader", default="auto", choices=["auto", "dali", "torch"], help="loader kind")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between memory samples")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # a child: one stage, its result as JSON on stdout
        children = {
            "plan": lambda: stage_plan(args.config),
            "webdataset": lambda: stage_webdataset(args.out),
            "dali": lambda: stage_dali(args.out, args.threads),
            "duckdb": lambda: stage_duckdb(args.out),
            "loader": lambda: stage_loader(args.out, args.loader, args.batch_size, args.threads),
        }
        result = children[args.stage]()
        print(json.dumps({**result, "self_peak_mb": round(_memory_mb(os.getpid())[1])}))  # short stages: the sampler
        return  # may see them only at start-up

    if (args.out / "manifest.json").exists():
        raise SystemExit(f"{args.out} holds a build already; choose a new --out (the rehearsal measures a fresh build)")
    me = [sys.executable, str(Path(__file__).resolve()), str(args.config), "--out", str(args.out),
          "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--loader", args.loader]  # fmt: skip
    load = [os.getloadavg()[0]]
    report: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "command": " ".join(["python bench/bench_rehearsal.py", *sys.argv[1:]]),
        "standin": ensure_standin(args.config, args.standin_images),
        "stages": {},
    }
    stages = report["stages"]
    stages["plan"] = _json_stage("plan", run_sampled([*me, "--stage", "plan"], args.interval))
    build_cmd = [*R3FA, "shards", "build", str(args.config), "--out", str(args.out), "--workers", str(args.workers),
                 "--format", "json"]  # fmt: skip
    stages["build"] = _json_stage("build", run_sampled(build_cmd, args.interval))
    stages["verify"] = run_sampled([*R3FA, "shards", "verify", str(args.out), "--format", "json"], args.interval)
    stages["verify"]["result"] = json.loads(stages["verify"].pop("stdout") or "{}")
    for name in ("webdataset", "dali", "duckdb", "loader"):
        stages[name] = _json_stage(name, run_sampled([*me, "--stage", name], args.interval))
    load.append(os.getloadavg()[0])

    build = stages["build"]["result"]
    delivered = build["samples"]
    synthetic = build.get("counts", {}).get("synthetic")
    plan = stages["plan"]["result"]
    for name, stage in stages.items():
        samples = delivered if name in ("build", "verify") else stage["result"].get("samples")
        stage["samples_per_s"] = _rate(samples, stage["seconds"])
    seconds = stages["build"]["seconds"]
    report |= {
        "load_average": load,
        "counts": {
            "target": {"real": plan["target_real"], "synthetic": plan["target_synthetic"]},
            "planned": {"real": plan["planned_real"], "synthetic": plan["planned_synthetic"]},
            "delivered": {"real": None if synthetic is None else delivered - synthetic, "synthetic": synthetic,
                          "total": delivered},
            "rejected": build["rejected"],
            "verify_ok": stages["verify"]["result"].get("ok"),
        },
        "rejection_reasons": stages["duckdb"]["result"]["rejections"],
        "shard_sizes": shard_sizes(args.out),
        "extrapolation_680k": {
            f"{cores}_cores_hours": round(PAPER_SAMPLES / max(delivered, 1) * seconds * args.workers / cores / 3600, 2)
            for cores in CORES
        },
    }  # fmt: skip
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
