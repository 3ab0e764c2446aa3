"""Infer each fold's held-out cases with that fold's own model (leave-one-out and k-fold runs).

    python reports/scripts/loo_infer.py RUN_DIR CASES_DIR OUT_DIR [--instances]

RUN_DIR holds ``fold_K/`` run folders (``medseg train --fold 0,1,2,3``); each fold's held-out cases (the checkpoint's
``val_cases``) are read from CASES_DIR (the plan's import patterns: raw per-case folders or an imagesTr folder) and
written to OUT_DIR with the run's own infer settings. ``--instances`` also writes ``<case>_instances.nii.gz`` and
``<case>_lesions.json`` (on by default for lesion_instances models). Then ``medseg evaluate -p OUT_DIR ...`` scores
every case exactly once, each by a model that never saw it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("loo_infer")


def held_out_cases(run: Path) -> list[str]:
    """The case ids a fold validated on (and so never trained on), from the checkpoint `medseg infer` takes."""
    from medseg.infer.model import resolve_checkpoints
    from medseg.train.checkpoint import load_checkpoint

    return list(load_checkpoint(resolve_checkpoints(run)[0]).val_cases)


def fold_runs(runs: Path) -> list[Path]:
    return sorted(path for path in runs.glob("fold_*") if path.is_dir())


def infer_held_out(runs: Path, cases: Path, out: Path, instances: bool | None = None) -> list[str]:
    """Every fold's held-out cases into ``out``; returns the case ids written."""
    from medseg.infer import Segmenter, infer
    from medseg.infer.model import load_model
    from medseg.infer.segmenter import saved_infer_config

    written: list[str] = []
    for run in fold_runs(runs):
        model = load_model(run)
        settings = saved_infer_config(model)
        if instances is not None:
            settings = settings.model_copy(update={"instances": instances})
        segmenter = Segmenter(model, settings)
        for case in held_out_cases(run):
            infer(model, cases / case, out, segmenter=segmenter)
            log.info("%s: %s", run.name, case)
            written.append(case)
    return written


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("medseg", "monai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    flags = [arg for arg in argv if arg.startswith("--")]
    paths = [arg for arg in argv if not arg.startswith("--")]
    if len(paths) != 3 or set(flags) - {"--instances"}:
        sys.stderr.write(__doc__ or "")
        return 2
    runs, cases, out = (Path(path) for path in paths)
    if not fold_runs(runs):
        sys.stderr.write(f"error: {runs}: no fold_* run folders\n")
        return 2
    written = infer_held_out(runs, cases, out, instances=True if "--instances" in flags else None)
    sys.stdout.write(f"{len(written)} held-out case(s) written to {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
