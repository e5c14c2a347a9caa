"""Standard and everywhere nets (issue "Learned nets you can trust"): the proposal batches, the
error table over the view box, the shipped everywhere nets, `train --scene` and the scene keys
`net` and `checkpoint`."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from toydiff import checkpoint, exact, mixtures, nets, scenes, train
from toydiff.__main__ import main
from toydiff.scene import Scene, run

INLINE = dict(  # a mixture that is not a preset
    means=[[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]],
    covs=[[[0.3, 0.0], [0.0, 0.3]], [[0.3, 0.0], [0.0, 0.3]], [[0.2, 0.0], [0.0, 0.2]]],
    weights=[0.4, 0.4, 0.2],
    membership=[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    concepts=["A", "B", "C"],
)


def eps_star(mix, x, ab, concept) -> np.ndarray:
    return np.asarray(exact.eps(mix, x, float(ab), concept))


def test_everywhere_recipe_is_exact_targets_with_the_box_proposal():
    assert train.preset_config("ring", "everywhere") == train.TrainConfig(
        target="exact", proposal=0.5
    )
    tree = train.preset_config("tree", "everywhere", steps=10)
    assert (tree.t_lognormal, tree.proposal, tree.steps) == (0.5, 0.5, 10)
    assert train.preset_config(None) == train.TrainConfig(steps=24_000)  # an inline mixture
    assert train.preset_config(None, "everywhere") == train.TrainConfig(
        target="exact", proposal=0.5
    )
    with pytest.raises(ValueError, match="^proposal: .*target='exact'"):
        train.TrainConfig(proposal=0.5)
    with pytest.raises(ValueError, match="^net: 'wide' is not one of standard, everywhere"):
        train.preset_config("ring", "wide")


def test_proposal_rows_are_uniform_on_the_box_with_exact_targets():
    mix = mixtures.preset("three_blobs")
    data, n = train.make_data(mix), 4096
    lim = train.PROPOSAL_WIDTH * mixtures.extent(mix)
    assert float(data.box) == pytest.approx(lim)
    config = train.TrainConfig(batch=n, target="exact", proposal=1.0)
    x_t, t, concept, target, weight = map(
        np.asarray, train.draw_batch(jax.random.key(5), data, config)
    )
    np.testing.assert_allclose(weight, 1 / np.maximum(np.sum(target**2, -1), 1), rtol=1e-5)
    # every row uniform on [−lim, lim]²: mean 0, variance lim²/3, inside the box
    assert np.all(np.abs(x_t) <= lim)
    np.testing.assert_allclose(x_t.mean(0), 0.0, atol=5 * lim / np.sqrt(3 * n))
    np.testing.assert_allclose(x_t.var(0), lim**2 / 3, rtol=0.1)
    # targets: ε*(x_t, c) of the exact oracle, row by row (c = C: the null concept)
    ab = np.asarray(data.alpha_bars)[t]
    for i in range(0, n, 512):
        c = int(concept[i])
        want = eps_star(mix, x_t[i : i + 1], ab[i], None if c == len(mix.concepts) else c)
        np.testing.assert_allclose(target[i : i + 1], want, rtol=1e-4, atol=1e-5)
    # a share of 0.5: about half the rows leave p_t (far out on the box at small t)
    half = train.TrainConfig(batch=n, target="exact", proposal=0.5)
    x_half = np.asarray(train.draw_batch(jax.random.key(5), data, half)[0])
    moved = np.mean(
        np.any(
            x_half
            != np.asarray(
                train.draw_batch(
                    jax.random.key(5), data, train.TrainConfig(batch=n, target="exact")
                )[0]
            ),
            axis=1,
        )
    )
    assert abs(moved - 0.5) < 5 * np.sqrt(0.25 / n)


def test_box_error_table_matches_an_independent_draw():
    mix = mixtures.preset("three_blobs")
    params, config, _ = checkpoint.load(checkpoint.pretrained_stem("three_blobs"), mix)
    table = train.error_table(mix, params, config, n=4000, where="box")
    lim, t = mixtures.extent(mix), 50
    ab = float(np.asarray(train.make_data(mix).alpha_bars)[t])
    x = np.random.default_rng(0).uniform(-lim, lim, (4000, 2)).astype(np.float32)
    got = train.relative_error(
        nets.apply(params, config, x, t, ab, np.zeros(4000, int)), eps_star(mix, x, ab, 0)
    )
    assert got == pytest.approx(table["A"][train.ERROR_TS.index(t)], rel=0.25)
    with pytest.raises(ValueError, match="^where: 'sky'"):
        train.error_table(mix, params, config, where="sky")


@pytest.mark.parametrize("name", mixtures.PRESETS)
def test_shipped_everywhere_nets_are_right_on_the_box(name):
    """The everywhere main net: as good as the standard one on p_t, and several times better on
    the view box at low t, where guided runs that leave the data go (recomputed here)."""
    mix = mixtures.preset(name)
    root = checkpoint.net_root("everywhere")
    params, config, meta = checkpoint.load(checkpoint.pretrained_stem(name, root=root), mix)
    _, _, weak_meta = checkpoint.load(checkpoint.pretrained_stem(name, True, root), mix)
    assert meta["net"] == weak_meta["net"] == "everywhere" and meta["train"]["proposal"] == 0.5
    assert (
        meta["command"].startswith("python -m toydiff train")
        and "--net everywhere" in meta["command"]
    )
    assert set(meta["errors"]["box_rows"]) == {*mix.concepts, "null"}
    std, std_config, _ = checkpoint.load(checkpoint.pretrained_stem(name), mix)
    mine = train.error_table(mix, params, config, n=2000, where="box")
    theirs = train.error_table(mix, std, std_config, n=2000, where="box")
    low = slice(0, 2)  # t = 10, 50
    for row in mine:
        assert np.mean(mine[row][low]) < 0.5 * np.mean(theirs[row][low]), (row, mine, theirs)
    for row, errs in meta["errors"]["rows"].items():  # on p_t
        assert np.mean(errs) <= {"tree": 0.25}.get(name, 0.10), row


def test_scene_net_and_checkpoint_keys():
    scene = Scene.from_dict(dict(preset="ring", score="learned", net="everywhere"))
    assert Scene.from_json(scene.to_json()) == scene and scene.checkpoint is None
    with pytest.raises(ValueError, match="^net: 'wide' is not one of standard, everywhere"):
        Scene.from_dict(dict(preset="ring", net="wide"))
    with pytest.raises(ValueError, match="^checkpoint: expected a string"):
        Scene.from_dict(dict(preset="ring", checkpoint=3))
    with pytest.raises(checkpoint.CheckpointError, match="train --scene FILE --out DIR"):
        run(Scene.from_dict(dict(mixture=INLINE, score="learned", negative="C", n=10)))
    # a link cannot name a folder for the server to read
    decoded = scenes.decode_query({"checkpoint": "/etc", "net": "everywhere"})
    assert decoded.warnings[0].startswith("'checkpoint': unknown key ignored")
    assert decoded.scenes["left"].net == "everywhere" and decoded.scenes["left"].checkpoint is None


def test_cli_trains_a_scenes_inline_mixture_and_the_scene_uses_it(tmp_path, capsys):
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(dict(mixture=INLINE, negative="C", method="ccfg", n=200)))
    out = tmp_path / "nets"
    args = [
        "train",
        "--scene",
        str(path),
        "--out",
        str(out),
        "--net",
        "everywhere",
        "--steps",
        "16",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for stem in ("mixture", "mixture_weak"):
        _, _, meta = checkpoint.load(out / "everywhere" / stem, mixtures.Mixture(**INLINE))
        assert meta["preset"] is None and meta["net"] == "everywhere"
        assert meta["command"] == "python -m toydiff " + " ".join(args)
        assert f"{out / 'everywhere' / stem}:" in printed
    scene = Scene.from_dict(
        dict(
            mixture=INLINE,
            negative="C",
            score="learned",
            net="everywhere",
            checkpoint=str(out),
            n=50,
        )
    )
    _, m = run(scene)
    assert 0.0 <= m["off_support"] <= 1.0 and np.isfinite(m["net_error_on_path"])
    other = {**INLINE, "weights": [0.3, 0.5, 0.2]}
    with pytest.raises(checkpoint.CheckpointError, match="trained on a different mixture"):
        run(scene.replace(mixture=other))
    with pytest.raises(checkpoint.CheckpointError, match="missing checkpoint file .*nets/mixture"):
        run(scene.replace(net="standard"))  # only the everywhere kind was trained
