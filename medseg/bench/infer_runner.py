"""One timed inference in a fresh process, for :mod:`medseg.bench.infer`: medseg's pipeline or a
plain MONAI pipeline with the same network, weights, window, overlap and Gaussian blending.

Run as ``python -m medseg.bench.infer_runner {medseg,monai} SPEC.json RESULT.json``. Each pipeline
runs in its own process so that its peak resident memory (``ru_maxrss``) is its own; the time
covers model load -> read -> preprocess -> sliding window -> back to the input grid -> write,
not the Python imports (whose memory is in both peaks alike: ``baseline_rss_mb``).

The MONAI pipeline is the one of MONAI's tutorials: ``LoadImaged -> EnsureChannelFirstd ->
Orientationd(RAS) -> Spacingd(bilinear) -> ScaleIntensityRanged`` (clip and z-score with the
plan's CT statistics, the same normalization as medseg), ``sliding_window_inference`` (Gaussian,
same overlap and batch), ``Activationsd(softmax) -> Invertd -> AsDiscreted(argmax) -> SaveImaged``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_medseg(spec: dict[str, Any]) -> dict[str, Any]:
    from medseg.infer import InferConfig, Segmenter, infer

    config = InferConfig(device=spec["device"], overlap=spec["overlap"], sw_batch_size=spec["sw_batch_size"], tta=False,
                         prefetch=False, amp=spec.get("amp", "auto"), compile=spec.get("compile", "auto"))
    baseline = _rss_mb()
    start = time.perf_counter()
    segmenter = Segmenter(spec["model"], config)
    model_s = time.perf_counter() - start
    report = infer(segmenter.model, spec["input"], spec["out_dir"], config, segmenter=segmenter)
    seconds = time.perf_counter() - start
    (name,) = report.outputs
    sidecar = json.loads(Path(spec["out_dir"], f"{name}.json").read_text())
    stages = {"model": model_s, **{k: v for k, v in sidecar["runtime_s"].items() if k != "total"}}
    stages["write"] = seconds - sum(stages.values())
    mask = next(p for p in report.outputs[name] if p.name.endswith(".nii.gz"))
    return {"seconds": seconds, "stages_s": stages, "baseline_rss_mb": baseline, "mask": str(mask),
            "preprocessed_shape": sidecar["input"]["preprocessed_shape"]}


def run_monai(spec: dict[str, Any], expert: bool = False) -> dict[str, Any]:
    """MONAI's tutorial pipeline, or with ``expert`` the faster one a MONAI expert writes: float32
    Spacingd, argmax on the model grid, and a nearest-neighbour Invertd of the label map only."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import (Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd,
                                  SaveImaged, ScaleIntensityRanged, Spacingd)

    from medseg.infer.model import load_model

    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    baseline = _rss_mb()
    stages: dict[str, float] = {}
    start = tick = time.perf_counter()
    model = load_model(spec["model"]).to(device)  # the same network object and weights as medseg's
    network = model.networks[0]
    settings = model.plan.preprocessing
    (scheme,) = settings.normalization
    lo, hi = scheme.clip
    mean, std = scheme.mean, scheme.std
    stages["model"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pre = Compose([
        LoadImaged("image"),
        EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=model.configuration.grid_spacing(), mode="bilinear", **({"dtype": np.float32} if expert else {})),
        ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=(lo - mean) / std, b_max=(hi - mean) / std, clip=True),
    ])
    data = pre({"image": spec["input"]})
    stages["read+preprocess"] = time.perf_counter() - tick

    tick = time.perf_counter()
    with torch.no_grad():
        autocast = spec.get("amp") == "bf16"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = sliding_window_inference(data["image"][None].to(device), model.patch_size, spec["sw_batch_size"], network,
                                              overlap=spec["overlap"], mode="gaussian")
    data["pred"] = logits[0].float().cpu()
    del logits
    stages["predict"] = time.perf_counter() - tick

    tick = time.perf_counter()
    if expert:
        post = Compose([
            AsDiscreted("pred", argmax=True),
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True, to_tensor=True),
        ])
    else:
        post = Compose([
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted("pred", argmax=True),
        ])
    data = post(data)
    stages["restore"] = time.perf_counter() - tick
    tick = time.perf_counter()
    SaveImaged("pred", output_dir=spec["out_dir"], output_postfix="seg", separate_folder=False, output_dtype=np.uint8,
               dtype=np.float32, resample=False, print_log=False)(data)
    stages["write"] = time.perf_counter() - tick
    seconds = time.perf_counter() - start
    stem = Path(spec["input"]).name.split(".")[0]
    return {"seconds": seconds, "stages_s": stages, "baseline_rss_mb": baseline, "mask": str(Path(spec["out_dir"]) / f"{stem}_seg.nii.gz"),
            "preprocessed_shape": list(data["image"].shape[1:])}


def main(argv: list[str]) -> None:
    pipeline, spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["out_dir"]).mkdir(parents=True, exist_ok=True)
    runners = {"medseg": run_medseg, "monai": run_monai, "monai-expert": lambda spec: run_monai(spec, expert=True)}
    result = runners[pipeline](spec)
    result.update({"pipeline": pipeline, "peak_rss_mb": _peak_mb(), "torch_threads": torch.get_num_threads()})
    Path(result_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
