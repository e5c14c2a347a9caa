"""Real model: the toy's guidance rules on a shipped class-conditional UNet (8×8 digits or 28×28
Fashion-MNIST), judged by a small CNN, plus the Stable Diffusion runs saved by `python -m toydiff bridge
sd`. No math here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from toydiff import assets, atlas, guidance
from toydiff.viz import plots
from ui.state import log_values

N_CLASSES = 10
# label -> (bridge data set name, what the caption says it was trained on)
DATASETS = {
    "digits": ("digits", "scikit-learn's 8×8 digits"),
    "Fashion-MNIST": ("fashion", "28×28 Fashion-MNIST (Debian's dataset-fashion-mnist)"),
}
WEIGHT_KEYS = ("lam_neg", "scale_neg", "p_neg", "push_neg")  # with a positive: λ⁺, γλ⁺ too
HOW_TO = (
    'Make one with `python -m toydiff bridge sd --model <hub id or folder> --prompt "..." '
    '--negative "..." --seeds 0-7 --out {folder}/<name>` (several processes: '
    "`accelerate launch -m toydiff bridge sd ...`)."
)


def main():
    settings = settings_ui()
    label = settings["dataset"]
    name, trained_on = DATASETS[label]
    st.title(f"Real model: removing a {label} class")
    st.caption(
        f"The same guidance functions as the toy, on a class-conditional UNet trained on {trained_on} "
        f"(`pretrained/{name}_unet.*`); a small CNN judges which class each sample shows."
    )
    try:
        result = run(json.dumps(settings, sort_keys=True))
    except ImportError as e:  # the bridge extra is not installed: say the one command
        st.error(
            f"This page needs the image-model extra (torch, diffusers; {e}). Install it with "
            "`.venv/bin/pip install -r requirements-bridge.txt` (README's first command "
            "installs it), then reload the page."
        )
    except ValueError as e:  # a missing or corrupt checkpoint
        st.error(
            f"Cannot run the {label} model: {e}. Train one with "
            f"`python -m toydiff.bridge {name}-train --out pretrained`, or point the checkpoint "
            f"folder at {name}_unet.* and {name}_judge.*."
        )
    else:
        results_view(settings, result)
    saved_runs_ui()


def bridge_rules() -> list[str]:
    """Registered rules whose branches an image model gives (∅, positive, negative, conditional)."""
    from toydiff.bridge import loop

    names = []
    for name in guidance.RULES:
        try:
            loop.bridge_rule(name)
            names.append(name)
        except ValueError:
            pass
    return names


def class_names(dataset: str) -> tuple[str, ...]:
    """The 10 class names of a data set label (digits without torch installed too)."""
    try:
        from toydiff.bridge import datasets

        return datasets.dataset(DATASETS[dataset][0]).classes
    except ImportError:
        return tuple(str(c) for c in range(N_CLASSES))


def settings_ui() -> dict:
    """Sidebar: data set, rule and its registry parameters, classes, steps, images, seed, checkpoints."""
    sb = st.sidebar
    dataset = sb.selectbox("Dataset", list(DATASETS), key="rm.dataset")
    names_of = class_names(dataset)
    sb.header(f"{dataset} model")
    try:
        names = bridge_rules()
    except ImportError:
        names = [n for n, r in guidance.RULES.items() if atlas.runs_on_images(r)]
    method = sb.selectbox(
        "rule",
        names,
        index=names.index("ncfg"),
        key="rm.method",
        format_func=lambda r: guidance.RULES[r].label,
    )
    knobs = {
        name: param_ui(f"rm.{method}.{name}", name, p)
        for name, p in guidance.rule(method).all_params.items()
    }
    neg = sb.selectbox(
        "class to remove (negative)",
        range(N_CLASSES),
        index=3,
        key=f"rm.{dataset}.neg",  # per data set: the options show its class names
        format_func=lambda c: names_of[c],
    )
    pos = sb.selectbox(
        "positive class",
        [None, *range(N_CLASSES)],
        key=f"rm.{dataset}.pos",
        format_func=lambda c: "none (unconditional)" if c is None else names_of[c],
    )
    steps = sb.slider("DDIM steps", 5, 100, 20, key="rm.steps")
    n = sb.slider("number of images", 16, 1000, 128, step=16, key="rm.n")
    seed = int(sb.number_input("seed", 0, 2**31 - 1, 0, key="rm.seed"))
    folder = sb.text_input(
        "checkpoint folder",
        str(_pretrained()),
        key="rm.ckpt",
        help="holds <data set>_unet.{json,safetensors} and <data set>_judge.{json,safetensors}",
    )
    return {
        "dataset": dataset,
        "method": method,
        "knobs": knobs,
        "neg": int(neg),
        "pos": pos,
        "steps": int(steps),
        "n": int(n),
        "seed": seed,
        "folder": folder,
    }


def _pretrained() -> Path:
    return assets.root()


def param_ui(key: str, name: str, param: guidance.Param) -> float:
    """A slider over the registry range [lo, hi]: round log-spaced values for γ and log parameters."""
    label, helptext = f"{name}", f"{param.help}; range [{param.lo:g}, {param.hi:g}]."
    if param.log or name == "gamma":
        values = log_values(param.lo, param.hi, param.default)
        return float(
            st.sidebar.select_slider(
                label,
                values,
                float(param.default),
                key=key,
                format_func=lambda v: f"{v:g}",
                help=helptext,
            )
        )
    step = (param.hi - param.lo) / 200
    return float(
        st.sidebar.slider(
            label,
            float(param.lo),
            float(param.hi),
            float(param.default),
            step,
            key=key,
            help=helptext,
        )
    )


@st.cache_resource(show_spinner="loading the UNet and judge ...")
def load_models(folder: str, name: str = "digits"):
    """(unet, judge) from folder/<name>_{unet,judge}.*; missing or corrupt -> ValueError."""
    import torch

    from toydiff.bridge import digits

    torch.set_num_threads(2)
    unet, _ = digits.load_unet(Path(folder) / f"{name}_unet", f"{name}_unet")
    judge, _ = digits.load_judge(Path(folder) / f"{name}_judge", f"{name}_judge")
    return unet, judge


@st.cache_data(show_spinner="sampling ...", max_entries=32)
def run(settings_json: str) -> dict:
    """Images (n, S, S) in [0, 1], judged labels (n,), timesteps (S,) and weight stats (mean, p10, p90)."""
    from toydiff.bridge import digits

    s = json.loads(settings_json)
    unet, judge = load_models(s["folder"], DATASETS[s["dataset"]][0])
    pos = digits.NULL if s["pos"] is None else s["pos"]
    x, info = digits.sample(
        unet,
        s["method"],
        s["knobs"],
        s["n"],
        pos=pos,
        neg=s["neg"],
        steps=s["steps"],
        seed=s["seed"],
    )
    labels, _, _ = digits.judge_images(judge, x)
    keys = WEIGHT_KEYS + (("lam_pos", "scale_pos") if s["pos"] is not None else ())
    stats = {k: tuple(_band(info[k])) for k in keys if k in info}
    return {"images": (x[:, 0].numpy() + 1) / 2, "labels": labels, "t": info["t"], "stats": stats}


def _band(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, 10th, 90th percentile) over samples of an (S, N) diagnostic."""
    v = np.asarray(v, np.float64)
    return v.mean(1), np.percentile(v, 10, axis=1), np.percentile(v, 90, axis=1)


def results_view(s: dict, result: dict):
    label = guidance.RULES[s["method"]].label
    names = class_names(s["dataset"])
    title = f"{label}, removing {names[s['neg']]}" + (
        "" if s["pos"] is None else f", towards {names[s['pos']]}"
    )
    hist = np.bincount(result["labels"], minlength=N_CLASSES)
    share = hist[s["neg"]] / max(1, len(result["labels"]))
    left, right = st.columns([1, 1])
    left.subheader("Samples")
    left.image(
        mosaic(result["images"][:128]),
        clamp=True,
        width="stretch",
        caption=f"first {min(128, len(result['images']))} of {len(result['images'])} samples",
    )
    right.subheader("Judged class")
    right.metric(
        f"share of removed class {names[s['neg']]}", f"{share:.1%}", help="chance level 10 %"
    )
    right.plotly_chart(
        histogram_figure(hist, s["neg"], s["pos"], title, names),
        theme=None,
        config=plots.CONFIG,
        key="rm.hist",
    )
    st.subheader("Weights over time")
    st.plotly_chart(
        plots.weights_figure(result["t"], result["stats"], title),
        theme=None,
        config=plots.CONFIG,
        key="rm.weights",
    )
    st.caption(
        "Mean over samples (line) and 10–90 % band. nCFG keeps λ⁻ = 1 everywhere; CCFG's λ⁻ drops "
        "once a sample no longer resembles the removed class. Bottom: the push of the negative term "
        "on x_t per step, |b_t|·γλ⁻·‖Δ_n‖ (b_t: the DDIM step's coefficient of ε̂), as on the toy."
    )


def mosaic(images: np.ndarray, cols: int = 16, zoom: int | None = None) -> np.ndarray:
    """(H, W) grey tiles of the (n, S, S) images, 1-pixel white gaps, upscaled without smoothing
    (by default to ≈ 48 screen pixels per image)."""
    n, s = len(images), images.shape[-1]
    zoom = zoom or max(1, round(48 / s))
    cols = min(cols, n)
    rows = -(-n // cols)
    tiles = np.ones((rows * cols, s + 1, s + 1), np.float32)
    tiles[:n, :s, :s] = np.clip(images, 0, 1)
    grid = tiles.reshape(rows, cols, s + 1, s + 1).transpose(0, 2, 1, 3)
    grid = grid.reshape(rows * (s + 1), cols * (s + 1))
    return np.kron(grid, np.ones((zoom, zoom), np.float32))


def histogram_figure(
    hist: np.ndarray, neg: int, pos: int | None, title: str, names=None
) -> go.Figure:
    """Bars of judged classes: the removed class red, the positive class green, the others grey."""
    names = names or [str(c) for c in range(N_CLASSES)]
    colors = ["#888"] * N_CLASSES
    colors[neg] = plots.WEIGHT_COLORS["p_neg"]
    if pos is not None:
        colors[pos] = plots.WEIGHT_COLORS["lam_pos"]
    share = hist / max(1, hist.sum())
    bar = go.Bar(
        x=list(names),
        y=share,
        marker_color=colors,
        customdata=hist,
        hovertemplate="class %{x}: %{y:.1%} (%{customdata} images)<extra></extra>",
    )
    fig = go.Figure(bar)
    fig.add_hline(
        y=0.1,
        line_dash="dot",
        line_color="#444",
        annotation_text="uniform",
        annotation_position="top right",
    )
    fig.update_layout(
        template="simple_white",
        height=360,
        title=dict(text=title, x=0.02, font=dict(size=14)),
        margin=dict(l=55, r=15, t=55, b=45),
        xaxis=dict(title="judged class", automargin=True, tickangle=-40),
        yaxis=dict(title="share of samples", tickformat=".0%", rangemode="tozero"),
    )
    return fig


def saved_runs_ui():
    """Saved SD runs: any folder under the results folder with diagnostics.json and grid.png."""
    st.divider()
    st.subheader("Saved Stable Diffusion runs")
    folder = st.text_input("results folder", "results", key="rm.results")
    root = Path(folder).expanduser()
    runs = (
        sorted(
            p.parent for p in root.rglob("diagnostics.json") if (p.parent / "grid.png").is_file()
        )
        if root.is_dir()
        else []
    )
    if not runs:
        st.info(
            f"No saved runs in `{folder}` (none of its folders has diagnostics.json and grid.png). "
            + HOW_TO.format(folder=folder.rstrip("/") or "results")
        )
        return
    picked = st.selectbox(
        "run", runs, format_func=lambda p: str(p.relative_to(root)) or ".", key="rm.run"
    )
    try:
        meta = json.loads((picked / "diagnostics.json").read_text())
        knobs = {n: r.get("knobs", {}) for n, r in meta.get("rules", {}).items()}
        st.caption(
            f"model `{meta.get('model')}`, prompt {meta.get('prompt')!r}, negative {meta.get('negative')!r}, "
            f"seeds {meta.get('seeds')}, {meta.get('steps')} steps; knobs {knobs}"
        )
    except (OSError, ValueError, AttributeError) as e:
        st.warning(f"{picked / 'diagnostics.json'} is unreadable ({e}); showing the images only.")
    st.image(str(picked / "grid.png"), caption="rules × seeds")
    if (picked / "weights.png").is_file():
        st.image(
            str(picked / "weights.png"), caption="weights over time (mean over seeds, min–max band)"
        )


if __name__ == "__main__":
    main()
