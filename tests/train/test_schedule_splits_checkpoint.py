import random

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.schema import FORMAT_VERSION, TrainingState
from medseg.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from medseg.train.config import TrainConfig
from medseg.train.schedule import learning_rate, poly_lr, training_progress, warmup_cosine_lr
from medseg.train.splits import load_or_create_splits, make_splits
from tests.schema._builders import tiny_payload


def test_poly_matches_nnunet_formula():
    assert poly_lr(0.01, 0.0) == pytest.approx(0.01)
    assert poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 1.0) == 0.0


def test_warmup_cosine_shape():
    assert warmup_cosine_lr(1.0, 0.01, warmup=0.02) == pytest.approx(0.5)
    assert warmup_cosine_lr(1.0, 0.02, warmup=0.02) == pytest.approx(1.0)
    assert warmup_cosine_lr(1.0, 1.0, warmup=0.02, min_fraction=0.1) == pytest.approx(0.1)


def test_time_budget_drives_progress():
    assert training_progress(10, 100, elapsed_s=50, budget_s=100) == pytest.approx(0.5)
    assert training_progress(80, 100, elapsed_s=50, budget_s=100) == pytest.approx(0.8)
    assert training_progress(10, 100, elapsed_s=500, budget_s=100) == 1.0
    config = TrainConfig(schedule="poly", lr=0.02)
    assert learning_rate(config, 0.25) == pytest.approx(0.02 * 0.75**0.9)


def test_splits_are_deterministic_disjoint_and_complete(tmp_path):
    ids = [f"case_{i:03d}" for i in range(23)]
    splits = make_splits(ids, 5, seed=1)
    assert splits == make_splits(list(reversed(ids)), 5, seed=1)
    assert sorted(case for fold in splits for case in fold["val"]) == ids
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"]) and len(fold["train"]) + len(fold["val"]) == 23
    assert make_splits(ids, 5, seed=2) != splits
    path = tmp_path / "splits.json"
    assert load_or_create_splits(path, ids, 5, 1) == splits
    assert load_or_create_splits(path, ids, 5, 999) == splits, "an existing file for the same cases is reused"
    with pytest.raises(ConfigError):
        make_splits(ids[:3], 5)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    training = TrainingState(optimizer=optimizer.state_dict(), scaler={}, iteration=70, elapsed_s=1.5, best_ema_dice=0.5, ema_dice=0.4, rng={"0": state})
    path = save_checkpoint(tmp_path / "last.pt", tiny_payload(model, epoch=7, training=training))
    payload = load_checkpoint(path)
    assert payload.epoch == 7 and payload.format_version == FORMAT_VERSION and payload.training.iteration == 70
    restore_rng_state(payload.training.rng["0"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    fresh = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(payload.training.optimizer)
    torch.testing.assert_close(fresh.state_dict()["state"][0]["momentum_buffer"], optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temporary file left"


def test_foreign_and_damaged_checkpoints_are_refused(tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(InputError, match="not a medseg checkpoint"):
        load_checkpoint(foreign)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    pickled = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": Evil()}, pickled)
    with pytest.raises(InputError):
        load_checkpoint(pickled)


def test_best_checkpoint_ema_follows_one_fixed_case_set(tiny_cache, tmp_path, monkeypatch):
    """The EMA behind checkpoint_best.pt is over the periodic validation's cases only: the final validation of every
    held-out case is logged in full (val_mean_dice) but enters the EMA with those cases' scores, so a higher mean over
    a larger case set cannot pass for progress."""
    from medseg.train.progress import TrainingProgress
    from medseg.train.trainer import Trainer
    from medseg.train.validate import summarize
    from tests.train.conftest import tiny_config

    trainer = Trainer(tiny_config("train.val_max_cases=1", "train.val_every=1"), tiny_cache, tmp_path / "run", progress=False)
    assert len(trainer.val_ids) == 2 and trainer.ema_ids == trainer.val_ids[:1]
    scores = {trainer.val_ids[0]: 0.2, trainer.val_ids[1]: 1.0}  # the periodic case scores 0.2, the other one 1.0

    def validate(final: bool) -> dict:
        ids = trainer.val_ids if final else trainer.val_ids[:1]
        return summarize({case: {key: scores[case] for key in trainer.targets} for case in ids}, trainer.targets, trainer.val_kind)

    monkeypatch.setattr(trainer, "_validate", validate)
    (tmp_path / "run").mkdir()
    rows: list[dict] = []
    with trainer.session, TrainingProgress(enabled=False, total=2) as progress:
        for epoch, last in ((1, False), (2, True)):
            trainer.counters.epoch = epoch
            rows.append({})
            trainer._after_epoch(rows[-1], last, None, progress)
    assert rows[1]["val_mean_dice"] == pytest.approx(0.6) and rows[1]["val_cases"] == 2, "the final validation is recorded in full"
    assert rows[1]["val_ema_cases_mean_dice"] == pytest.approx(0.2) and rows[1]["val_ema_dice"] == pytest.approx(0.2)
    best = load_checkpoint(tmp_path / "run" / "checkpoint_best.pt")
    assert best.epoch == 1 and best.validation.mean_dice == pytest.approx(0.2)
    assert trainer.counters.best_ema == pytest.approx(0.2)
