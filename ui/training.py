"""Mixture editor (st.data_editor -> an inline scene mixture) and live training of a session net."""

from __future__ import annotations

import json
import threading
import uuid
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from toydiff import denoisers, mixtures
from toydiff.mixtures import Mixture

from . import state

if TYPE_CHECKING:
    import pandas as pd
# pandas (~0.3 s) and toydiff.train (optax) are imported where used, in the editor and training
# tabs: the app's first page never needs them and a start waits for every import.

MAX_NETS = 3  # user nets per session
MAX_STORED = 24  # user nets kept by the server for all sessions together (oldest dropped)
MAX_EDIT = 64  # components the editor shows
TRAIN_STEPS = (1000, 2000, 4000, 8000)


# ------------------------------------------------------------------------------------ mixture editor
def mixture_frame(mix: Mixture, concepts: list[str]) -> pd.DataFrame:
    """One row per component: mean, covariance entries, weight, membership in each named concept."""
    import pandas as pd

    means, covs, w = np.asarray(mix.means), np.asarray(mix.covs), np.asarray(mix.weights)
    frame = pd.DataFrame(
        {
            "mean_x": means[:, 0],
            "mean_y": means[:, 1],
            "var_x": covs[:, 0, 0],
            "var_y": covs[:, 1, 1],
            "cov_xy": covs[:, 0, 1],
            "weight": w,
        }
    )
    member = np.asarray(mix.membership)
    for c in concepts:
        frame[c] = member[mix.concepts.index(c)] if c in mix.concepts else 0.0
    return frame.astype(np.float64)


def frame_to_mixture(frame: pd.DataFrame, concepts: list[str]) -> dict:
    """The Scene's inline mixture dict of an edited table; Mixture(**it) validates it."""
    f = frame.astype(float)
    covs = np.stack([np.stack([f.var_x, f.cov_xy], -1), np.stack([f.cov_xy, f.var_y], -1)], -2)
    return {
        "means": f[["mean_x", "mean_y"]].to_numpy().tolist(),
        "covs": covs.tolist(),
        "weights": f.weight.to_numpy().tolist(),
        "membership": [f[c].to_numpy().tolist() if c in f else [0.0] * len(f) for c in concepts],
        "concepts": concepts,
    }


def editor_ui(mix: Mixture):
    """Edit means, variances, weights and memberships; use the result as the scene's mixture."""
    if mix.k > MAX_EDIT:
        st.info(
            f"This mixture has {mix.k} components; the editor starts from three_blobs instead "
            f"(at most {MAX_EDIT} rows)."
        )
        mix = mixtures.preset("three_blobs")
    base = state.data_key()
    text = st.text_input(
        "concept names (comma-separated)",
        ", ".join(mix.concepts),
        key=f"edit.names.{base}",
        help="One membership column per concept; names must be unique.",
    )
    concepts = [c.strip() for c in text.split(",") if c.strip()]
    frame = st.data_editor(
        mixture_frame(mix, concepts),
        num_rows="dynamic",
        key=f"edit.table.{base}.{text}",
        width="stretch",
    )
    st.caption(
        "Covariance [[var_x, cov_xy], [cov_xy, var_y]] must be positive definite; weights > 0 "
        "(normalised); memberships in [0, 1]."
    )
    try:
        spec = frame_to_mixture(frame, concepts)
        Mixture(**spec)
    except (ValueError, TypeError, KeyError) as e:
        st.error(f"Mixture not valid: {e}")
        return
    c1, c2 = st.columns(2)
    c2.download_button(
        "Download mixture JSON",
        json.dumps(spec, indent=1),
        "mixture.json",
        "application/json",
        key="edit.download",
        help="The Scene's 'mixture' object (use with \"preset\": null).",
    )
    if c1.button(
        "Use as the scene's mixture",
        key="edit.apply",
        type="primary",
        help="Both columns switch to this mixture (preset 'custom mixture').",
    ):
        st.session_state["_pending"] = {"custom_mixture": json.dumps(spec, sort_keys=True)}
        st.rerun()


# ---------------------------------------------------------------------------------- session nets
_STORE_LOCK = threading.Lock()


@st.cache_resource(show_spinner=False)
def _store() -> dict:
    """id -> trained net; shared by sessions, bounded by MAX_STORED (sessions keep ids only)."""
    return {}


def user_nets(key: str) -> dict[str, str]:
    """{net id: label} of this session's nets trained on the mixture `key` (preset name or JSON)."""
    store = _store()
    return {
        i: store[i]["label"]
        for i in st.session_state.get("user_nets", [])
        if i in store and store[i]["key"] == key
    }


def net_denoiser(net: str, mix: Mixture):
    """The session net as a Denoiser (its own weak model), or None if the store dropped it."""
    entry = _store().get(net)
    return None if entry is None else denoisers.learned(mix, entry["params"], entry["config"])


def train_net(mix: Mixture, steps: int, seed: int = 0, progress=None) -> dict:
    """Trains the main net on the mixture with train's step function; returns params, config, errors."""
    from toydiff import train

    config = train.TrainConfig(steps=steps, chunk=250, warmup=min(500, steps // 10))
    net_config = train.default_net_config(mix)
    report = None
    if progress:
        report = lambda step, end, loss: progress(
            step / end, f"step {step} / {end}, loss {loss:.4f}"
        )
    ts, log = train.train(mix, net_config, config, seed, progress=False, callback=report)
    return dict(
        params=ts.ema,
        config=net_config,
        errors=train.error_table(mix, ts.ema, net_config),
        seconds=log["wall_time_s"],
        loss=log["final_loss"],
        steps=steps,
    )


def train_ui(common: dict, mix: Mixture):
    """Train a net for the current mixture (preset or edited), with a progress bar and its ε errors."""
    key = common["preset"] or json.dumps(common["mixture"], sort_keys=True)
    st.markdown(
        f"Trains the ε-network on exact samples of **{common['preset'] or state.CUSTOM}** "
        f"({mix.k} components); it becomes a score source for this session "
        f"(at most {MAX_NETS} nets)."
    )
    c1, c2, c3 = st.columns([3, 1, 1])
    steps = c1.select_slider(
        "training steps",
        TRAIN_STEPS,
        2000,
        key="train.steps",
        help="Batches of 512; ≈ 1000 steps/s on two CPU cores after a compile.",
    )
    seed = c2.number_input(
        "seed", 0, 2**31 - 1, 0, key="train.seed", help="Initialisation and batches."
    )
    if c3.button("Train", key="train.run", type="primary", help="Start training (≈ 5–20 s)."):
        bar = st.progress(0.0, text="compiling…")
        out = train_net(mix, int(steps), int(seed), lambda f, text: bar.progress(f, text=text))
        bar.progress(
            1.0,
            text=f"trained {out['steps']} steps in {out['seconds']:.1f} s, loss {out['loss']:.4f}",
        )
        net = f"net:{uuid.uuid4().hex[:8]}"
        store = _store()
        mine = st.session_state.setdefault("user_nets", [])
        out.update(key=key, label=f"net {len(mine) + 1} ({out['steps']} steps)")
        with _STORE_LOCK:  # sessions run in threads: two may train and evict at once
            store[net] = out
            mine.append(net)
            while len(mine) > MAX_NETS:
                store.pop(mine.pop(0), None)
            while len(store) > MAX_STORED:
                store.pop(next(iter(store)))
        st.session_state["train.last"] = net
    last = st.session_state.get("train.last")
    entry = _store().get(last) if last else None
    if entry:
        import pandas as pd

        from toydiff import train

        table = pd.DataFrame(entry["errors"], index=[f"t={t}" for t in train.ERROR_TS]).T
        st.markdown(
            f"**{entry['label']}**: relative ε error against the exact oracle "
            "(RMS ‖ε_net − ε*‖ / ‖ε*‖, x_t ~ p_t(·|c)); pick it under *score source*."
        )
        st.table(table.style.format("{:.3f}"))
