"""Command line: python -m toydiff {metrics,render,sweep,train,scenes,bench,bridge} ... (-h for help)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import plugins
from .checkpoint import NETS
from .scene import Scene


def _scene(path: str) -> Scene:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"--scene: cannot read {path}: {e.strerror}") from None
    return Scene.from_json(text)


def cmd_metrics(args):
    """Prints the scene's metrics (JSON with --json)."""
    from .scene import run

    scene = _scene(args.scene)
    _, m = run(scene)
    if args.json:
        print(
            json.dumps({k: None if v != v else v for k, v in m.items()}, sort_keys=True)
        )  # NaN -> null
    else:
        for k, v in m.items():
            print(f"{k:>16}: {v}")


def cmd_render(args):
    """Draws the scene: final samples over the density (PNG/SVG/PDF) and the trajectory (GIF/MP4)."""
    from . import metrics
    from .scene import run
    from .viz import export

    if not (args.out or args.png or args.gif or args.mp4):
        raise ValueError("render: give at least one of --out, --png, --gif, --mp4")
    scene = _scene(args.scene)
    result, m = run(scene)
    mix = scene.build_mixture()
    threshold = (
        metrics.preset_threshold(scene.preset)
        if scene.preset
        else metrics.off_support_threshold(mix)
    )
    knobs = "  ".join(f"{k}={v:g}" for k, v in scene.params.items() if isinstance(v, float))
    title = f"{scene.method}  {knobs}  leak={m['leakage_hard']:.1%}  off={m['off_support']:.1%}"
    for path in filter(None, (args.out, args.png)):
        export.samples_figure(mix, result.x0, scene.negative, threshold, title).savefig(path)
        print(f"wrote {path}")
    for path in filter(None, (args.gif, args.mp4)):
        export.save_animation(
            export.animation(mix, result.traj, scene.negative, threshold, title), path
        )
        print(f"wrote {path}")


def cmd_sweep(args):
    """Sweeps γ (and τ for ccfg) for the scene's rule and --methods; writes sweep.csv and sweep.png."""
    from tqdm import tqdm

    from . import sweep
    from .viz import export

    scene = _scene(args.scene)
    methods = args.methods.split(",") if args.methods else [scene.method]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(desc="sweep", unit="run") as bar:

        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        rows = sweep.run_sweep(scene, methods, progress=progress)
    sweep.write_csv(rows, out / "sweep.csv")
    export.tradeoff_figure(rows).savefig(out / "sweep.png")
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")


def cmd_train(args):
    """Trains the main and guide nets of one preset, of every preset, or of a scene's mixture
    (preset or inline; --scene), standard or everywhere (--net); --weak: one guide net only."""
    from . import mixtures, train

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps: must be >= 1, got {args.steps}")
    if args.scene:
        scene = _scene(args.scene)  # nets learn the unturned data; a scene's rotate turns them
        jobs = [(scene.preset, scene.base_mixture())]
    else:
        if not args.all:
            mixtures.preset_info(args.preset)  # unknown name -> ValueError listing the valid ones
        jobs = [(name, None) for name in (mixtures.PRESETS if args.all else [args.preset])]
    command = "python -m toydiff " + " ".join(args.argv)
    for name, mix in jobs:
        steps = {} if args.steps is None else {"steps": args.steps}
        config = train.preset_config(name, args.net, **steps)
        kinds = [args.weak] if args.weak else ["main", "shipped"]
        for kind in kinds:
            stem, meta = train.train_net(
                name, args.out, kind, config, args.seed, net=args.net, mix=mix, command=command
            )
            print(train.format_errors(stem, meta), flush=True)


def cmd_scenes(args):
    """Lists the curated scenes with their claims (--json: the full list; --check: measures them)."""
    import textwrap

    from . import scenes

    if args.json:
        print(json.dumps([c.to_dict() for c in scenes.CURATED], indent=1))
        return
    failed = []
    for c in scenes.CURATED:
        print(f"{c.name}: {c.title}")
        print(textwrap.fill(c.caption, 96, initial_indent="    ", subsequent_indent="    "))
        for side, scene in c.scenes().items():
            print(f"    {side:>5}: {_scene_line(scene)}")
        checked = scenes.check_claims(c) if args.check else None
        for i, claim in enumerate(c.claims):
            line = f"    claim: {claim.text()}"
            if checked is not None:
                got = ", ".join(f"{s} {v:.4g}" for s, v in checked[i].measured.items())
                line += f"  measured {got}  {'holds' if checked[i].holds else 'FAILS'}"
                if not checked[i].holds:
                    failed.append(f"{c.name}: {claim.text()}")
            print(line, flush=True)
        print()
    if failed:
        raise ValueError(f"scenes: {len(failed)} claim(s) fail: " + "; ".join(failed))


def _scene_line(scene: Scene) -> str:
    """The keys of a scene that differ from the defaults, as k=v (method always)."""
    default = Scene().to_dict()
    d = scene.to_dict()
    keys = ["method"] + [k for k in d if k != "method" and d[k] != default.get(k)]
    return " ".join(f"{k}={d[k]}" for k in keys if k != "mixture") + (
        " mixture=(inline)" if scene.mixture is not None else ""
    )


def cmd_bench(args):
    """Runs benchmarks/<name>.py (sampler, exact, claim or all) from a source checkout; extra args pass on."""
    import subprocess

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    names = {"sampler": "bench_sampler", "exact": "bench_exact", "claim": "claim"}
    for name in names if args.name == "all" else [args.name]:
        script = root / f"{names[name]}.py"
        if not script.exists():
            raise ValueError(
                f"bench: {script} not found (benchmarks ship with the source checkout)"
            )
        rc = subprocess.call([sys.executable, str(script), *args.args])
        if rc:
            raise ValueError(f"bench: {script.name} exited with {rc}")


def cmd_thresholds(args):
    """Recomputes every preset's off-support threshold into pretrained/thresholds.json."""
    from . import metrics

    for name, row in metrics.write_thresholds().items():
        print(f"{name}: log p threshold {row['threshold']:.4f} ({row['fingerprint']})")


def cmd_bridge(args):
    """Runs guidance rules on a diffusers image model (needs requirements-bridge.txt)."""
    from .bridge import cli

    cli.run(args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # rules and solvers registered from outside ($TOYDIFF_PLUGINS, entry points)
        plugins.load()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if (
        argv[:1] == ["bridge"] and argv[1:2] and argv[1].startswith(("digits-", "fashion-"))
    ):  # {digits,fashion}-{train,table}
        from .bridge.cli import digits_main

        return digits_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m toydiff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("metrics", help=cmd_metrics.__doc__)
    p.add_argument("--scene", required=True, help="scene JSON file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=cmd_metrics)
    p = sub.add_parser("render", help=cmd_render.__doc__)
    p.add_argument("--scene", required=True, help="scene JSON file")
    p.add_argument("--out", help="output image (.png, .svg or .pdf)")
    p.add_argument("--png", help="same as --out")
    p.add_argument("--gif", help="trajectory animation as GIF")
    p.add_argument("--mp4", help="trajectory animation as MP4 (ffmpeg from imageio-ffmpeg)")
    p.set_defaults(fn=cmd_render)
    p = sub.add_parser("sweep", help=cmd_sweep.__doc__)
    p.add_argument("--scene", required=True, help="scene JSON file")
    p.add_argument("--methods", help="comma-separated rules (default: the scene's method)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("train", help=cmd_train.__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="preset name")
    which.add_argument("--all", action="store_true", help="every preset")
    which.add_argument(
        "--scene",
        help="scene JSON file: train for its mixture (preset or inline); the scene "
        'then uses them with "score": "learned", "checkpoint": OUT',
    )
    p.add_argument(
        "--net",
        choices=NETS,
        default="standard",
        help="standard: trained on x_t ~ p_t only, as a real model; everywhere: exact targets on "
        "the whole view box too (saved under OUT/everywhere)",
    )
    p.add_argument("--steps", type=int, default=None, help="main-net steps (weak net: 1/8)")
    p.add_argument(
        "--weak",
        choices=("shipped", "small", "short"),
        help="train only this guide net for autoguidance: shipped (2×32, 1/8 of the steps; "
        "tree: the main net stopped at 1/4), small (2×32, all steps) or short (main net stopped "
        "at 1/8); the main net is kept",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="pretrained", help="output folder (default pretrained/)")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser(
        "scenes",
        help=cmd_scenes.__doc__,
        description="The app's curated scenes: name, title, caption, both columns and the claims "
        "(column, metric, op, value, score sources) that the caption asserts. A claim holds when "
        "`metrics --scene` of its column, with 'score' set to each listed source, compares as "
        "stated.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON list: [{"name", "title", "caption", "left": scene, "right": scene, '
        '"claims": [{"column", "metric", "op", "value", "scores"}]}], each scene complete (a '
        "file that metrics --scene accepts)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="run every claim's column for each score source and print the measured values "
        "(about a minute; exit status 2 when a claim fails)",
    )
    p.set_defaults(fn=cmd_scenes)
    sub.add_parser("thresholds", help=cmd_thresholds.__doc__).set_defaults(fn=cmd_thresholds)
    p = sub.add_parser("bench", help=cmd_bench.__doc__)
    p.add_argument("name", choices=("sampler", "exact", "claim", "all"), help="which benchmark")
    p.add_argument(
        "args", nargs=argparse.REMAINDER, help="passed on to the script (see its --help)"
    )
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("bridge", help=cmd_bridge.__doc__)
    from .bridge.cli import (
        add_arguments as bridge_arguments,
    )  # torch-free: torch loads in cmd_bridge

    bridge_arguments(p)
    p.set_defaults(fn=cmd_bridge)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        args.fn(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
