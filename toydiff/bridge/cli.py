"""`python -m toydiff bridge sd ...`: rules × seeds on a Stable Diffusion (XL) model, written as an image
grid (PNG), the per-step diagnostics (JSON) and a weights-over-time plot. Imports torch only in `run`."""

from __future__ import annotations

import argparse

from .. import guidance
from .checks import INSTALL, WHERE, check_model, require
from .datasets import DATASETS, dataset
from .generate import Job

__all__ = ["DATASETS", "INSTALL", "WHERE", "check_model", "dataset"]  # re-exported for callers


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Adds the bridge's arguments to its subparser."""
    p.add_argument(
        "family", choices=("sd",), help="sd: Stable Diffusion 1.5 or SDXL (auto-detected)"
    )
    p.add_argument("--model", required=True, help="hub id (owner/name) or local diffusers folder")
    p.add_argument("--prompt", default="", help="positive prompt (default: none)")
    p.add_argument("--negative", required=True, help="negative prompt")
    p.add_argument(
        "--rules",
        default="ncfg,ccfg,dng,sd_negative",
        help="comma-separated guidance rules and/or perturbation methods pag, sag, seg, slg "
        "(diffusers' own PAG/SAG/SEG/skip-layer guidance beside CFG at --gamma; scale: "
        "--knob w_pert=...; sag: SD 1.5 only)",
    )
    p.add_argument("--gamma", type=float, default=7.5, help="guidance scale γ for every rule")
    p.add_argument(
        "--tau", type=float, default=0.2, help="CCFG temperature τ (official: 0.2 on SD latents)"
    )
    p.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other rule knob, e.g. prior=0.05, w_neg=1 or w_pert=3 (repeatable)",
    )
    p.add_argument(
        "--weight-schedule",
        choices=guidance.WEIGHT_SCHEDULES,
        default="constant",
        help="g(t) on every rule's γ, as in the toy (window: --knob g_late=... --knob t_switch=...)",
    )
    p.add_argument("--steps", type=int, default=50, help="denoising steps")
    p.add_argument("--seeds", default="0-7", help="seeds: 0-7, 0,3,5 or a mix")
    p.add_argument("--batch", type=int, default=4, help="seeds per UNet call (3 branches each)")
    p.add_argument(
        "--null",
        choices=("empty", "zeros"),
        default="empty",
        help='∅ branch: the encoding of "" (CCFG code) or zeros (SDXL default)',
    )
    p.add_argument("--offline", action="store_true", help="never download (as HF_HUB_OFFLINE=1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--save-images",
        action="store_true",
        help="also write images.npz: rule -> (seeds, H, W, 3) float images in [0, 1]",
    )


def parse_seeds(text: str) -> list[int]:
    """Seeds from '0-7', '0,3,5' or '0-3,9'; a bad item -> ValueError naming it."""
    seeds = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        lo, _, hi = item.partition("-")
        if not (lo.isdigit() and (not hi or hi.isdigit())) or (hi and int(hi) < int(lo)):
            raise ValueError(f"--seeds: bad item {item!r}; use 0-7, 0,3,5 or 0-3,9")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    if not seeds:
        raise ValueError("--seeds: no seeds given")
    return seeds


def parse_knobs(items: list[str]) -> dict[str, float]:
    """{'prior': 0.05, ...} from NAME=VALUE strings; unknown names or non-numbers -> ValueError."""
    known = {k for r in guidance.RULES.values() for k in r.all_params} | {"w_pert"}
    known |= {"g_late", "t_switch"}  # the window weight schedule's
    knobs = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in known:
            raise ValueError(f"--knob: unknown knob {name!r}; valid: {', '.join(sorted(known))}")
        try:
            knobs[name] = float(value)
        except ValueError:
            raise ValueError(f"--knob: {item!r} needs a number after '='") from None
    return knobs


def job_of(args) -> tuple[Job, list[str], list[int], dict]:
    """(job, rules, seeds, extra knobs) of the parsed options."""
    job = Job(
        model=args.model,
        negative=args.negative,
        out=args.out,
        prompt=args.prompt,
        gamma=args.gamma,
        tau=args.tau,
        steps=args.steps,
        batch=args.batch,
        null=args.null,
        offline=args.offline,
        save_images=getattr(args, "save_images", False),
    )
    rules = [s.strip() for s in args.rules.split(",") if s.strip()]
    return job, rules, parse_seeds(args.seeds), schedule_of(args, parse_knobs(args.knob))


def schedule_of(args, knobs: dict) -> dict:
    """knobs with --weight-schedule's (none for constant); g_late, t_switch are the window's."""
    name = getattr(args, "weight_schedule", "constant")
    window = {k: v for k, v in knobs.items() if k in ("g_late", "t_switch")}
    rest = {k: v for k, v in knobs.items() if k not in window}
    if window and name != "window":
        raise ValueError(f"--knob {', '.join(window)}: only --weight-schedule window reads it")
    return rest if name == "constant" else {**guidance.schedule_knobs(name, **window), **rest}


def run(args) -> None:
    """`bridge sd`: grid.png, diagnostics.json and weights.png in --out, from generate.run, or
    from shard.run under `accelerate launch` or torchrun (WORLD_SIZE > 1: the seeds split over
    the processes, the main process writes the same three files)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .shard import run as run_job
    else:
        from .generate import run as run_job
    run_job(*job_of(args))


# ------------------------------------------------------- digits and fashion (bridge.digits / fashion / table)
DIGITS_COMMANDS = ("digits-train", "digits-table")
FASHION_COMMANDS = ("fashion-train", "fashion-table")
# name -> defaults of <name>-train: UNet steps, batch, lr; judge epochs and batch; unguided check size
TRAIN_DEFAULTS = {
    "digits": dict(
        steps=4000,
        batch=64,
        lr=1.5e-3,
        judge_epochs=25,
        judge_batch=64,
        check_n=2000,
        check_steps=50,
        p_uncond=0.15,
        min_snr=0.0,
    ),
    "fashion": dict(
        steps=6000,
        batch=64,
        lr=2e-3,
        judge_epochs=4,
        judge_batch=128,
        check_n=1000,
        check_steps=50,
        p_uncond=0.2,
        min_snr=5.0,
    ),
}


def _dataset_parser(name: str) -> argparse.ArgumentParser:
    """`<name>-train` and `<name>-table` with their options (defaults from TRAIN_DEFAULTS)."""
    d = TRAIN_DEFAULTS[name]
    p = argparse.ArgumentParser(prog="python -m toydiff bridge", description=dataset_main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        f"{name}-train", help=f"train the {name} UNet and judge (writes {name}_{{unet,judge}}.*)"
    )
    t.add_argument("--out", default="pretrained", help="output folder (default pretrained/)")
    t.add_argument("--steps", type=int, default=d["steps"], help="UNet training steps")
    t.add_argument("--batch", type=int, default=d["batch"], help="UNet batch size")
    t.add_argument("--lr", type=float, default=d["lr"], help="UNet peak learning rate")
    t.add_argument("--judge-epochs", type=int, default=d["judge_epochs"])
    t.add_argument("--judge-batch", type=int, default=d["judge_batch"])
    t.add_argument("--check-n", type=int, default=d["check_n"], help="unguided samples judged")
    t.add_argument("--check-steps", type=int, default=d["check_steps"], help="their DDIM steps")
    t.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    t.add_argument(
        "--p-uncond", type=float, default=d["p_uncond"], help="share of null-class labels"
    )
    t.add_argument(
        "--min-snr",
        type=float,
        default=d["min_snr"],
        help="Min-SNR-γ loss weight min(SNR, γ)/SNR (0: unweighted ε loss)",
    )
    t.add_argument(
        "--keep-judge", action="store_true", help="keep --out's judge and train a fresh UNet"
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="keep --out's judge and continue training --out's UNet (wall times add up)",
    )
    s = sub.add_parser(
        f"{name}-table", help="class-removal table: every negative rule × γ × removed class"
    )
    s.add_argument(
        "--out", required=True, help=f"output folder ({name}_table.md/.json and the plots)"
    )
    s.add_argument("--classes", default="0-9", help="removed classes: 0-9, 0,3,5 or a mix")
    s.add_argument("--n", type=int, default=300, help="samples per removed class and setting")
    s.add_argument("--steps", type=int, default=50, help="DDIM steps")
    s.add_argument("--batch", type=int, default=1000, help="samples per UNet call")
    s.add_argument(
        "--rules",
        default=None,
        help="only these rules' rows of the default grid, comma-separated (the unguided row always runs)",
    )
    s.add_argument(
        "--merge",
        default=None,
        help=f"an existing {name}_table.json: add this (partial) run's new rows to it, marked as such, "
        "and write the merged table (its command stays the table's)",
    )
    s.add_argument(
        "--unet", default=None, help=f"UNet checkpoint stem (default pretrained/{name}_unet)"
    )
    s.add_argument(
        "--judge", default=None, help=f"judge checkpoint stem (default pretrained/{name}_judge)"
    )
    for q in (t, s):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=2, help="torch threads")
    return p


def dataset_main(argv: list[str], prog: str = "python -m toydiff bridge") -> int:
    """`python -m toydiff bridge {digits,fashion}-{train,table} --out DIR`: a class-conditional UNet
    and judge on 8×8 digits or 28×28 Fashion-MNIST, and its class-removal table."""
    import sys

    name = (argv[:1] or ["digits-"])[0].split("-")[0]
    args = _dataset_parser(name if name in TRAIN_DEFAULTS else "digits").parse_args(argv)
    try:
        require()
        import torch

        torch.set_num_threads(args.threads)
        data = dataset(name)
        if args.command.endswith("-train"):
            _train(args, data)
        else:
            _table(args, data, f"{prog} " + __import__("shlex").join(argv))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


digits_main = dataset_main  # toydiff.__main__ routes `bridge digits-*` here


def _train(args, data) -> None:
    """Runs digits.train_all for the data set with the command's options."""
    import torch

    from . import digits

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    digits.train_all(
        args.out,
        args.steps,
        args.batch,
        args.lr,
        judge_epochs=args.judge_epochs,
        seed=args.seed,
        threads=args.threads,
        log=lambda m: print(m, flush=True),
        data=data,
        device=device,
        judge_batch=args.judge_batch,
        check_n=args.check_n,
        check_steps=args.check_steps,
        p_uncond=args.p_uncond,
        resume=args.resume,
        keep_judge=args.keep_judge,
        min_snr=args.min_snr,
    )


def _table(args, data, command: str) -> None:
    """Runs the class-removal table for the data set and writes its files (table or fashion_table)."""
    import importlib

    from . import table

    classes = parse_seeds(args.classes)
    if any(c > 9 for c in classes) or args.n < 2 or args.steps < 1:
        raise ValueError("--classes must lie in 0-9, --n >= 2 and --steps >= 1")
    report = importlib.import_module(f"{__package__}.{TABLES[data.name]}")
    grid = getattr(report, "DEFAULT_GRID", None) or table.DEFAULT_GRID
    if args.rules:
        rules = [r.strip() for r in args.rules.split(",") if r.strip()]
        if not rules or set(rules) - set(grid):
            raise ValueError(f"--rules: choose among {', '.join(grid)}")
        grid = {r: grid[r] for r in rules}
    old = None
    if args.merge:  # only the settings the table lacks are run
        old, old_command = table.read_record(args.merge)
        grid = {r: [k for k in ks if not table.has_setting(old, r, k)] for r, ks in grid.items()}
        grid = {r: ks for r, ks in grid.items() if ks}
        if not grid:
            raise ValueError(f"--merge {args.merge}: the table has every setting already")
    record = table.run(
        args.out,
        classes,
        args.n,
        args.steps,
        args.seed,
        grid=grid,
        batch=args.batch,
        unet_stem=args.unet,
        judge_stem=args.judge,
        log=lambda m: print(m, flush=True),
        data=data,
    )
    if old is not None:
        record, command = table.merge_partial(old, record, command), old_command
    for path in report.write(record, args.out, command):
        print(f"wrote {path}")


TABLES = {
    "digits": "table",
    "fashion": "fashion_table",
}  # data set -> module with write(record, ...)
