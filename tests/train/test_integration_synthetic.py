"""A few minutes of CPU training on the synthetic tumor set finds the liver (Dice >= 0.85) and the tumors (slow)."""

from pathlib import Path

import pytest

from medseg.config.loader import load_config
from medseg.train.api import train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.integration
def test_synthetic_training_reaches_organ_dice(tmp_path):
    from medseg.data.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(tmp_path / "dataset", cases=10, seed=11)
    config = load_config(REPO / "configs" / "synthetic.yaml", [f"work_dir={tmp_path / 'work'}", f"run_dir={tmp_path / 'run'}", "train.max_minutes=6"])
    config.dataset = str(dataset)
    result = train(config, folds=[0], progress=False)[0]
    liver, tumor = result.last_validation["dice"][1], result.last_validation["dice"][2]
    assert liver >= 0.85, f"liver Dice {liver:.3f} after {result.iterations_done} iterations"
    assert tumor >= 0.2, f"tumor Dice {tumor:.3f} after {result.iterations_done} iterations"
