"""`medseg bench architectures`: every requested network trained under one budget, measured into one table."""

from __future__ import annotations

import json

import pytest

from medseg.bench.architectures import bench_architectures
from medseg.errors import ConfigError
from tests.train.conftest import TINY_OVERRIDES


def test_two_architectures_side_by_side(tmp_path):
    from medseg.data.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(tmp_path / "dataset", cases=4, seed=3, fov_mm=(120, 120, 72))
    overrides = [item for item in TINY_OVERRIDES if not item.startswith("train.epochs")] + ["train.epochs=1", "train.iterations_per_epoch=3"]
    out = tmp_path / "arch.json"
    result = bench_architectures(dataset, out, minutes=5.0, models=["dynunet", "fcn"], overrides=overrides, infer_cases=1,
                                 work_dir=tmp_path / "work")
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["dynunet", "fcn"] and result["rows"][0]["model"] == "dynunet"
    for row in rows.values():
        assert "error" not in row, row
        assert set(row["dice"]) == {"liver", "tumor"} and all(0.0 <= value <= 1.0 for value in row["dice"].values())
        assert row["iterations"] == 3 and row["parameters"] > 1000 and row["step_s_median"] > 0 and row["infer_s_per_case"] > 0
    assert rows["dynunet"]["parameters"] != rows["fcn"]["parameters"]
    from medseg.infer import load_model

    for name, row in rows.items():  # dynunet registers its blocks under two names: each weight counts once
        (fold,) = (tmp_path / "work" / name).rglob("checkpoint_last.pt")
        network = load_model(fold.parent).networks[0]
        assert row["parameters"] == sum(parameter.numel() for parameter in network.parameters()), name
    table = out.with_suffix(".md").read_text()
    assert "| dynunet |" in table and "| fcn |" in table and "Dice liver" in table


def test_an_unknown_name_fails_before_training_and_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'vnet'.*dynunet"):
        bench_architectures(tmp_path / "nowhere", tmp_path / "arch.json", models=["dynunet", "vnet"])
    assert not (tmp_path / "arch.json").exists()
