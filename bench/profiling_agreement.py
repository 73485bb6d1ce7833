"""Do synthesised faces carry labels that an independent model agrees with? NME per |yaw| bin, synthetic vs real.

An independent pretrained regressor (3DDFA-V2's mb05, trained elsewhere) is run on two sets built from the
same AFLW2000-3D sources: the real 120x120 crops against their real labels, and face-profiling views of them
(`pipelines.synthesis_stage.synthesize_sample`) against their synthetic labels. If the synthesis keeps image
and label consistent, the model's NME on synthetic crops is close to its NME on real crops at the same |yaw|.
Ground truth on both sides is the label's own 68 landmarks in the crop (so both compare the model with a
3DMM label the same way); NME = mean point error / sqrt(w h) of the ground-truth box, in percent; bins by the
label's |yaw|: [0, 30], (30, 60], (60, 90].

Example:
    .venv/bin/python bench/profiling_agreement.py --every 4 --yaw-steps 20,40 --json /tmp/agreement.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipelines.synthesis_stage import SynthesisConfig, synthesize_sample
from r3fa.crop import CROP_SIZE
from r3fa.evaluation import LandmarkPredictor
from r3fa.io import BadInputError
from r3fa.labels import landmarks_in_crop
from r3fa.metrics import BIN_NAMES, box_normaliser, nme, summarise
from r3fa.morphable import load_model
from r3fa.paths import data_root
from r3fa.readers import iter_aflw2000, load_source_sample, make_record
from r3fa.records import DATASET_CONVENTION, SampleRecord

CHECKPOINT = "3ddfa_v2/weights/mb05_120x120.pth"
_CROP_ROI = np.array([0.0, 0.0, CROP_SIZE, CROP_SIZE])  # predictions in crop pixels


def build_sets(every: int, yaw_steps: list[float]) -> tuple[list[SampleRecord], list[SampleRecord], int]:
    """Real records of every `every`-th AFLW2000-3D image and their synthetic views; also the rejection count."""
    config = SynthesisConfig(count=1)
    real, synthetic, rejected = [], [], 0
    for item in list(iter_aflw2000(data_root() / "aflw2000_3d"))[::every]:
        base = load_source_sample(item)
        real.append(make_record(base, item))
        for k, step in enumerate(yaw_steps):
            try:
                synthetic.append(synthesize_sample(base, item, step, f"{item.key}_profile{k}", config))
            except BadInputError:
                rejected += 1
    return real, synthetic, rejected


def agreement(predictor: LandmarkPredictor, records: list[SampleRecord], batch_size: int = 128) -> dict:
    """Per-bin NME (percent) of the predictor's crop-frame landmarks against the records' label landmarks."""
    predictions = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        crops = np.stack([r.crop for r in batch])
        predictions.append(np.asarray(predictor.landmarks_in_image(crops, np.tile(_CROP_ROI, (len(batch), 1)))))
    predicted = np.concatenate(predictions)
    truth = landmarks_in_crop(load_model("bfm68"), np.stack([r.params for r in records]), DATASET_CONVENTION)
    errors = nme(predicted, truth, box_normaliser(truth))
    summary = summarise(errors, np.array([r.pose_deg[1] for r in records]))
    return {
        "bins": dict(zip(BIN_NAMES, summary.means)),
        "counts": dict(zip(BIN_NAMES, summary.counts)),
        "mean": summary.mean,
    }


def markdown_table(real: dict, synthetic: dict) -> str:
    """The two rows side by side (NME % and sample count per bin)."""
    lines = ["| crops vs labels | " + " | ".join(BIN_NAMES) + " | mean of bins |", "|---|---|---|---|---|"]
    for name, row in (("real", real), ("synthetic (face profiling)", synthetic)):
        cells = [f"{row['bins'][b]:.2f} (n={row['counts'][b]})" for b in BIN_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['mean']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=4, help="use every n-th AFLW2000-3D image as a source")
    parser.add_argument("--yaw-steps", default="20,40", help="yaw increments per source, degrees")
    parser.add_argument("--checkpoint", type=Path, default=None, help=f"default $R3FA_DATA/{CHECKPOINT}")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    from r3fa.predictor import load_predictor  # issue 3's predictor (torch); imported only when run

    predictor = load_predictor(args.checkpoint or data_root() / CHECKPOINT)
    steps = [float(s) for s in args.yaw_steps.split(",") if s.strip()]
    real, synthetic, rejected = build_sets(args.every, steps)
    result = {"real": agreement(predictor, real), "synthetic": agreement(predictor, synthetic)}
    result.update(sources=len(real), yaw_steps=steps, synthetic_rejected=rejected)
    print(markdown_table(result["real"], result["synthetic"]))
    print(f"\n{len(real)} sources, yaw steps {steps}, {len(synthetic)} synthetic views ({rejected} rejected)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
