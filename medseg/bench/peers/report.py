"""The markdown of `medseg bench peer nnunet`: one table, the protocol in its header, the machine it ran on."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _machine(result: dict[str, Any]) -> str:
    machine = result["machine"]
    gpu = machine.get("gpu")
    hardware = f"{machine['cpu']}, {machine['cores']} cores, {machine.get('memory_gb')} GB RAM, " + (
        f"GPU {gpu['name']} ({gpu['memory_gb']} GB, CUDA {gpu['cuda']})" if gpu else "no GPU")
    packages = ", ".join(f"{name} {value}" for name, value in machine["packages"].items() if value)
    load = f"{result.get('load_average_before')} / {result.get('load_average_after', '-')}"
    return f"Machine: {hardware}; Python {machine['python']}; {packages}. Load average before / after: {load}."


def _table(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    labels = list(dict.fromkeys(label for row in rows for label in row["dice"]))
    header = ["tool", "TTA", *(f"Dice {label}" for label in labels), "mean Dice", *(f"HD95 {label} (mm)" for label in labels),
              "iterations", "s/iteration", "infer s/case"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        dice = [row["dice"].get(label) for label in labels]
        mean = sum(dice) / len(dice) if dice and None not in dice else None
        cells = [row["tool"], "on" if row["tta"] else "off", *(_number(value, 4) for value in dice), f"**{_number(mean, 4)}**",
                 *(_number(row["hd95"].get(label), 2) for label in labels), f"{row['iterations']:,}", _number(row["s_per_iteration"], 3),
                 _number(row["infer_s_per_case"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _details(result: dict[str, Any]) -> list[str]:
    lines = []
    medseg, nnunet = result.get("medseg"), result["nnunet"]
    if medseg:
        lines.append(f"- medseg: `{medseg['command']}`, {medseg['configuration']}, patch {medseg['patch_size']} x batch {medseg['batch_size']}; "
                     f"{medseg['train_seconds'] / 60:.1f} budget minutes ({medseg['train_wall_seconds'] / 60:.1f} wall minutes with start-up and "
                     f"its final validation), median training step {_number(medseg['step_s_median'], 2)} s; `medseg infer` with its "
                     "defaults but `--tta`/`--no-tta` (and the checkpoint it serves by default).")
    if "iterations" in nnunet:
        lines.append(f"- nnU-Net {nnunet['version']}: `{nnunet['planner']}` plans ({nnunet['prepare']['plans_identifier']}), {nnunet['configuration']}, "
                     f"{nnunet['prepare']['network']}, patch {nnunet['patch_size']} x batch {nnunet['batch_size']}; planning and preprocessing "
                     f"{nnunet['prepare']['seconds'] / 60:.1f} minutes (outside the budget); {nnunet['train_seconds'] / 60:.1f} budget minutes, "
                     f"median training step {_number(nnunet['step_s_median'], 2)} s, last LR {nnunet['final_lr']:.2e}, "
                     f"torch.compile {'on' if nnunet['compiled'] else 'off'}; `checkpoint_final.pth`; predictor step 0.5, Gaussian, 3+3 processes. "
                     f"timm/torchvision imported: {', '.join(nnunet['imported_but_never_needed']) or 'neither'}.")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """The report: title, protocol, machine, the table, and each tool's plan and timings."""
    name = result["dataset"].rstrip("/").split("/")[-1]
    lines = [f"# medseg vs nnU-Net v2 on {name}, fold {result['fold']}, {result['minutes']:g} minutes each on {result['device']} ({result['date']})", "",
             f"Protocol: {result['order']} (running both at once would halve each one's cores). The same "
             f"{result.get('held_out_cases', '?')} held-out cases: medseg's fold {result['fold']}, written as nnU-Net's `splits_final.json`. "
             f"Each trains for the same {result['minutes']:g} wall-clock minutes: the clock starts at the first training iteration and "
             "includes the tool's own periodic validation; planning and preprocessing are outside it. nnU-Net keeps its own plans, "
             "trainer and predictor; only its poly learning rate runs on the wall clock, so that it anneals at the end of the budget as "
             "medseg's does, and it serves its final checkpoint. Dice and HD95 (mean over the held-out cases) come from medseg's "
             "evaluation for both tools' predictions. *s/iteration*: budget seconds / iterations (the loader and the periodic "
             "validation included). *infer s/case*: one prediction call over all held-out cases (read, preprocess, sliding window, "
             "write; after the model is loaded, nnU-Net's worker processes started inside it) / cases.",
             "", _machine(result), "", *_table(result), "", *_details(result)]
    return "\n".join(lines) + "\n"
