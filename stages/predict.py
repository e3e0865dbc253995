"""Apply a trained model to your own images (not a DVC stage: run it on what `dvc repro` exported).

    python -m stages.predict colorize --model models/colorize_simsiam_cgan.pt --input photos/ --output colour/
    python -m stages.predict stylize  --model models/stylize_simsiam.pt --input photos/ --output paintings/
    python -m stages.predict stylize  --model models/ace.pt --style my_paintings/ --input photos/ --output ace/
    python -m stages.predict classify --model models/classify_git.pt --input digits/ --output digits.csv

MODEL is a file under models/ or an MLflow model URI (runs:/<run id>/<name>, models:/<name>/<version>).
Images are shrunk to --size on their long side, translated and brought back to their size (see
pipeline/predict.py); bad files are skipped with a count (--on-bad-image fail stops at the first).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from pipeline.errors import run_cli
from pipeline.model_files import load_model
from pipeline.predict import DEFAULT_SIZE, TASKS, predict
from pipeline.tracking import model_file_from_uri


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=list(TASKS))
    ap.add_argument("--model", required=True, help="a models/*.pt file or an MLflow model URI")
    ap.add_argument("--input", required=True, nargs="+", help="image files and/or folders (walked)")
    ap.add_argument("--output", required=True, help="a folder (colorize, stylize) or a .csv file (classify)")
    ap.add_argument("--style", default=None, help="ACE only: a folder of exemplar images of the target style")
    ap.add_argument("--seed", type=int, default=None, help="which training seed's network (default: the first)")
    ap.add_argument("--size", type=int, default=None, help=f"working size (default {DEFAULT_SIZE}; see above)")
    ap.add_argument("--reverse", action="store_true", help="stylize with a CycleGAN model: painting -> photo")
    ap.add_argument("--on-bad-image", default="skip", choices=["skip", "fail"])
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ap.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1, ...")
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    with tempfile.TemporaryDirectory() as tmp:
        path = model_file_from_uri(args.model, tmp) if ":/" in args.model else args.model
        summary = predict(args.task, load_model(path), args.input, args.output, style=args.style, seed=args.seed, size=args.size,
                          on_bad_image=args.on_bad_image, overwrite=args.overwrite, reverse=args.reverse, device=device)  # fmt: skip
    skipped = f" ({summary['skipped']} bad files skipped)" if summary["skipped"] else ""
    print(
        f"predict {args.task}: {summary['images']} images -> {summary['output']}{skipped} [{summary['kind']} {args.model}, seed {summary['seed']}, {device}]"
    )


if __name__ == "__main__":
    run_cli(main)
