"""Rules × seeds on a diffusers text-to-image pipeline, as a library with plain arguments: what
`python -m toydiff bridge sd` runs (cli.py parses, then calls `run`), and what `shard` runs in every
process under `accelerate launch`. torch and diffusers are imported inside the functions."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from .. import guidance
from . import perturb  # torch-free at import
from .checks import INSTALL, WHERE, check_model, require  # noqa: F401 (re-exported)


@dataclasses.dataclass(frozen=True)
class Job:
    """One run's settings (the `bridge sd` options)."""

    model: str
    negative: str
    out: str
    prompt: str = ""
    gamma: float = 7.5
    tau: float = 0.2
    steps: int = 50
    batch: int = 4
    null: str = "empty"  # ∅ branch: "empty" (the encoding of "") or "zeros"
    offline: bool = False
    save_images: bool = False


def check(job: Job, rules: list[str]) -> None:
    """ValueError for an unknown rule, a bad count or a missing model, before anything loads."""
    for name in rules:
        if name not in perturb.METHODS:
            guidance.rule(name)  # unknown name -> ValueError listing the valid ones
    if job.steps < 1 or job.batch < 1:
        raise ValueError("--steps and --batch must be >= 1")
    check_model(job.model)


def merge_infos(infos: list[dict]) -> dict:
    """Per-step info of several seed batches, joined along the seed axis."""
    import numpy as np

    return {
        k: infos[0][k] if k == "t" else np.concatenate([i[k] for i in infos], 1) for k in infos[0]
    }


def jsonable(info: dict) -> dict:
    """Nested lists with non-finite numbers as null."""
    clean = lambda x: x if math.isfinite(x) else None
    return {
        k: [clean(float(x)) for x in v]
        if v.ndim == 1
        else [[clean(float(x)) for x in row] for row in v]
        for k, v in info.items()
    }


def run(job: Job, rules: list[str], seeds: list[int], extra: dict) -> None:
    """Generates every rule × seed in this process, then writes grid.png, diagnostics.json and
    weights.png into job.out (`shard.run` does the same over several processes)."""
    check(job, rules)
    require()
    from . import loop, sd

    for name in set(rules) - set(perturb.METHODS):
        loop.bridge_rule(name)  # before the (slow) model load
    pipe = sd.load(job.model, local_files_only=True if job.offline else None)
    images, infos, knobs = generate_all(job, pipe, rules, seeds, extra)
    write(job, seeds, images, infos, knobs, sd.is_xl(pipe))


def generate_all(
    job: Job, pipe, rules: list[str], seeds: list[int], extra: dict
) -> tuple[dict, dict, dict]:
    """(images, infos, knobs), each rule -> value: (B, H, W, 3) images, (S, B) info, the rule's knobs."""
    import numpy as np

    images, infos, knobs = {}, {}, {}
    batches = [seeds[i : i + job.batch] for i in range(0, len(seeds), job.batch)]
    for name in rules:
        knobs[name] = rule_knobs(name, job, extra)
        outs = [generate(job, pipe, name, knobs[name], b) for b in batches]
        images[name] = np.concatenate([o[0] for o in outs])
        infos[name] = merge_infos([o[1] for o in outs])
    return images, infos, knobs


def rule_knobs(name: str, job: Job, extra: dict) -> dict[str, float]:
    """The knobs of a rule (registry defaults, then the job's) or of a perturbation method (γ, w)."""
    from . import loop

    if name in perturb.METHODS:
        w_pert = extra.get("w_pert", perturb.METHODS[name].w_pert)
        return {"gamma": float(job.gamma), "w_pert": float(w_pert)}
    return loop.default_knobs(name, gamma=job.gamma, tau=job.tau, **extra)


def generate(job: Job, pipe, name: str, knobs: dict, seeds: list[int]):
    """(images, info) of one rule or perturbation method on one batch of seeds."""
    from . import sd

    if name in perturb.METHODS:
        return perturb.generate(
            pipe, job.prompt, name, seeds, **knobs, steps=job.steps, null=job.null
        )
    return sd.generate(
        pipe, job.prompt, job.negative, name, knobs, seeds, steps=job.steps, null=job.null
    )


def write(job: Job, seeds: list[int], images: dict, infos: dict, knobs: dict, xl: bool) -> None:
    """Writes grid.png, weights.png and diagnostics.json (and images.npz if asked) into job.out."""
    from . import figures

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"{job.prompt!r}  not {job.negative!r}  γ={job.gamma:g}  τ={job.tau:g}  {job.steps} steps"
    )
    figures.grid(images, seeds, title).savefig(out / "grid.png", dpi=100)
    figures.weights(infos).savefig(out / "weights.png", dpi=100)
    meta = {
        "model": job.model,
        "prompt": job.prompt,
        "negative": job.negative,
        "seeds": seeds,
        "steps": job.steps,
        "null": job.null,
        "xl": xl,
    }
    rules_json = {n: {"knobs": knobs[n], **jsonable(infos[n])} for n in images}
    (out / "diagnostics.json").write_text(json.dumps({**meta, "rules": rules_json}, indent=1))
    if job.save_images:
        import numpy as np

        np.savez(out / "images.npz", **images)
    print(f"wrote {out / 'grid.png'}, {out / 'weights.png'}, {out / 'diagnostics.json'}")
