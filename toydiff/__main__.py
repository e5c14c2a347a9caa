"""Command line: python -m toydiff {metrics,render} ... (python -m toydiff -h for help)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
        print(json.dumps({k: None if v != v else v for k, v in m.items()}, sort_keys=True))  # NaN -> null
    else:
        for k, v in m.items():
            print(f"{k:>16}: {v}")


def cmd_render(args):
    """Draws the scene's final samples over the density into a PNG/SVG/PDF."""
    from . import metrics
    from .scene import run
    from .viz import export

    scene = _scene(args.scene)
    result, m = run(scene)
    mix = scene.build_mixture()
    threshold = metrics.preset_threshold(scene.preset) if scene.preset else metrics.off_support_threshold(mix)
    title = f"{scene.method}  γ={scene.gamma:g}  leak={m['leakage_hard']:.1%}  off={m['off_support']:.1%}"
    fig = export.samples_figure(mix, result.x0, scene.negative, threshold, title)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toydiff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("metrics", help=cmd_metrics.__doc__)
    p.add_argument("--scene", required=True, help="scene JSON file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=cmd_metrics)
    p = sub.add_parser("render", help=cmd_render.__doc__)
    p.add_argument("--scene", required=True, help="scene JSON file")
    p.add_argument("--out", required=True, help="output image (.png, .svg or .pdf)")
    p.set_defaults(fn=cmd_render)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
