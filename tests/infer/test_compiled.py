"""torch.compile of the inference networks: same masks, graceful fallback, and auto only where it pays."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medseg.infer import InferConfig, Segmenter
from medseg.infer.compiled import CompiledNetwork, should_compile
from medseg.io import read_volume


def test_auto_compiles_only_long_cpu_runs():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert should_compile("auto", cpu, 80, 80) and not should_compile("auto", cpu, 79, 80)
    assert not should_compile("auto", cuda, 10_000, 80)
    assert should_compile("on", cuda, 1, 80) and not should_compile("off", cpu, 10_000, 80)


def test_segmenter_decides_from_the_work_ahead(trained):
    image = read_volume(sorted((trained["dataset"] / "imagesTs").glob("*.nii.gz"))[0])
    segmenter = Segmenter(trained["run"], InferConfig(threads=1, compile_min_windows=10**6))
    prepared = segmenter.prepare(image)
    assert segmenter.compute_model(prepared.image.shape[1:]) is segmenter.model  # a handful of windows: eager
    assert not segmenter.compiled
    many = Segmenter(trained["run"], InferConfig(threads=1, compile_min_windows=1))
    many.expected_cases = 10**6  # a huge batch of such cases
    assert all(isinstance(n, CompiledNetwork) for n in many.compute_model(prepared.image.shape[1:]).networks)


def test_fallback_to_eager_when_compiling_fails(monkeypatch, caplog):
    network = torch.nn.Conv3d(1, 2, 3, padding=1).eval()

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    wrapped = CompiledNetwork(network, batch_size=2)
    batch = torch.randn(1, 1, 8, 8, 8)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        output = wrapped(batch)
        assert torch.equal(output, network(batch))
    assert wrapped.failed and "no C++ compiler found" in caplog.text


@pytest.mark.slow
def test_compiled_network_gives_the_eager_mask(trained):
    # Slow: the first compile takes ~15-30 s on 2 cores (inductor generates and builds C++).
    image = read_volume(sorted((trained["dataset"] / "imagesTs").glob("*.nii.gz"))[0])
    eager = Segmenter(trained["run"], InferConfig(threads=1, compile="off", sw_batch_size=3)).predict(image)
    compiled_segmenter = Segmenter(trained["run"], InferConfig(threads=1, compile="on", sw_batch_size=3))
    compiled = compiled_segmenter.predict(image)
    assert np.mean(eager.labels == compiled.labels) > 0.999
    assert compiled_segmenter.compiled and compiled_segmenter.sidecar(compiled)["settings"]["compiled"] is True
    import torch._inductor.config as inductor_config

    assert inductor_config.freezing is False  # frozen weights only inside medseg's own compiled calls


def test_yaml_on_off_are_accepted(tmp_path):
    from medseg.config.loader import load_config

    assert load_config(None, ["infer.compile=on"]).infer.compile == "on"
    assert load_config(None, ["infer.compile=off"]).infer.compile == "off"
    path = tmp_path / "infer.yaml"
    path.write_text("infer:\n  compile: on\n")
    assert load_config(path).infer.compile == "on"
