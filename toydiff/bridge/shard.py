"""Seed sweeps split over processes with Hugging Face Accelerate (`accelerate launch -m toydiff bridge sd`).

Each process generates its contiguous share of the seeds (`split_between_processes`) and writes
`<out>/parts/part-<rank>.npz`; after `wait_for_everyone` the main process joins the parts in rank order,
which is seed order, and writes what the single-process CLI writes. Parts go through the file system:
one machine, or a folder every node shares.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from . import generate, loop, sd


def part_path(out, rank: int) -> Path:
    """Where process `rank` writes its images and per-step info."""
    return Path(out) / "parts" / f"part-{rank}.npz"


def save_part(path: Path, seeds: list[int], images: dict, infos: dict) -> None:
    """One npz: "seeds", "<rule>/images" (B, H, W, 3) and "<rule>/<info key>" (S, B) or (S,)."""
    arrays = {"seeds": np.asarray(seeds, np.int64)}
    for name in images:
        arrays[f"{name}/images"] = images[name]
        arrays.update({f"{name}/{k}": v for k, v in infos[name].items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_parts(paths: list[Path], rules: list[str]) -> tuple[list[int], dict, dict]:
    """(seeds, images, infos) of the parts joined along the seed axis; parts without seeds are skipped."""
    parts = [dict(np.load(p)) for p in paths]
    parts = [p for p in parts if len(p["seeds"])]
    seeds = [int(s) for p in parts for s in p["seeds"]]
    images, infos = {}, {}
    for name in rules:
        images[name] = np.concatenate([p[f"{name}/images"] for p in parts])
        prefix = f"{name}/"
        keys = [
            k[len(prefix) :] for k in parts[0] if k.startswith(prefix) and k != f"{name}/images"
        ]
        infos[name] = generate.merge_infos([{k: p[prefix + k] for k in keys} for p in parts])
    return seeds, images, infos


def run(job: generate.Job, rules: list[str], seeds: list[int], extra: dict) -> None:
    """This process's seeds for every rule; the main process then merges and writes grid, plot, JSON."""
    generate.check(job, rules)
    generate.require()
    from accelerate import PartialState

    state = PartialState()
    for name in rules:
        loop.bridge_rule(name)  # before the (slow) model load
    pipe = sd.load(job.model, state.device, local_files_only=True if job.offline else None)
    with state.split_between_processes(seeds) as mine:  # contiguous, in rank order
        images, infos, knobs = (
            generate.generate_all(job, pipe, rules, mine, extra) if mine else ({}, {}, {})
        )
        save_part(part_path(job.out, state.process_index), mine, images, infos)
    state.wait_for_everyone()
    if state.is_main_process:
        paths = [part_path(job.out, r) for r in range(state.num_processes)]
        merged_seeds, images, infos = load_parts(paths, rules)  # knobs: rank 0 always has seeds
        assert merged_seeds == seeds, (merged_seeds, seeds)  # every seed once, in order
        generate.write(job, seeds, images, infos, knobs, sd.is_xl(pipe))
        shutil.rmtree(
            Path(job.out) / "parts"
        )  # the output folder then holds what a single run writes
    state.wait_for_everyone()
    state.destroy_process_group()
