"""Our boundary metrics reproduce MONAI 1.6.1 on random 3D shapes, anisotropic spacing included.

MONAI computes in float32; we compute in float64. Dice, HD, ASSD, NSD agree to 1e-6 (relative).
MONAI's HD95 goes through ``torch.quantile`` on float32, whose interpolation position is itself
rounded (up to ~3e-6 relative off), so HD95 is held to 1e-6 against the 95th percentile of
MONAI's own edge distances (same edges, same distances, same interpolation) and to 1e-5 against
the metric object.
"""

import warnings

import numpy as np
import pytest

from medseg.metrics.overlap import overlap_counts, overlap_metrics
from medseg.metrics.surface import boundary_metrics, surface_distances
from tests.metrics.helpers import monai_metrics, perturbed, random_blob

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

CASES = [
    # seed, spacing (mm), NSD tolerance (mm), blob fill
    (0, (1.0, 1.0, 1.0), 1.0, 0.3),
    (1, (0.7, 1.3, 2.1), 1.5, 0.3),
    (2, (2.5, 0.6, 0.9), 1.0, 0.15),
    (3, (0.7, 1.3, 2.1), 2.0, 0.3),
    (4, (1.2, 1.2, 3.0), 3.0, 0.6),  # blobs touching the image border
    (5, (0.5, 0.8, 0.8), 0.8, 0.05),  # small, fragmented shapes
]


def _ours(pred, ref, spacing, tolerance):
    metrics = boundary_metrics(surface_distances(pred, ref, spacing), tolerance)
    metrics["dice"] = overlap_metrics(*overlap_counts(pred, ref), 1.0)["dice"]
    return metrics


@pytest.mark.parametrize("seed,spacing,tolerance,fill", CASES)
def test_metrics_match_monai(seed, spacing, tolerance, fill):
    rng = np.random.default_rng(seed)
    ref = random_blob(rng, fill=fill)
    pred = perturbed(rng, ref)
    assert ref.any() and pred.any() and (pred != ref).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = monai_metrics(pred, ref, spacing, tolerance)
    ours = _ours(pred, ref, spacing, tolerance)
    for name in ("dice", "hd", "assd", "nsd"):
        assert ours[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-6), name
    assert ours["hd95"] == pytest.approx(expected["hd95"], rel=1e-5), "hd95 vs MONAI metric"
    assert 0 < ours["nsd"] < 1 or ours["nsd"] == 1.0


@pytest.mark.parametrize("seed,spacing", [(11, (0.7, 1.3, 2.1)), (12, (3.0, 0.5, 1.1)), (13, (1.0, 1.0, 1.0))])
def test_edges_distances_and_percentile_match_monai_exactly(seed, spacing):
    from monai.metrics.utils import get_edge_surface_distance

    rng = np.random.default_rng(seed)
    ref = random_blob(rng)
    pred = perturbed(rng, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (monai_pred_to_ref, monai_ref_to_pred), _ = get_edge_surface_distance(
            torch.from_numpy(pred), torch.from_numpy(ref), spacing=spacing, symmetric=True
        )
    ours = surface_distances(pred, ref, spacing)
    for theirs, mine in ((monai_pred_to_ref, ours.pred_to_ref), (monai_ref_to_pred, ours.ref_to_pred)):
        theirs = theirs.numpy().astype(np.float64)
        assert theirs.shape == mine.shape  # same surface voxels
        np.testing.assert_allclose(np.sort(mine), np.sort(theirs), rtol=1e-6, atol=1e-6)
    hd95_on_monai_distances = max(np.percentile(monai_pred_to_ref.numpy().astype(np.float64), 95), np.percentile(monai_ref_to_pred.numpy().astype(np.float64), 95))
    assert boundary_metrics(ours, 1.0)["hd95"] == pytest.approx(hd95_on_monai_distances, rel=1e-6, abs=1e-6)


def test_spacing_matters():
    rng = np.random.default_rng(21)
    ref = random_blob(rng)
    pred = perturbed(rng, ref)
    iso = boundary_metrics(surface_distances(pred, ref, (1, 1, 1)), 1.0)
    stretched = boundary_metrics(surface_distances(pred, ref, (1, 1, 3)), 1.0)
    assert stretched["hd"] > iso["hd"]
