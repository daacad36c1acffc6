"""Sweeps: expansion of ``sweep:`` into rows, one-line errors before any work, the report."""

import json

import pytest

from ssl_mae_plugin.recipe_loading import load_recipe, recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from ssl_mae_plugin.runner import run_recipe
from ssl_mae_plugin.sweeps import entry_origins, flatten_sweep, written_indices
from tests.conftest import TINY_MAE, TINY_SIMCLR, minimal_recipe


def swept(sweep, methods=None, **sections):
    return minimal_recipe(methods=methods or [dict(TINY_MAE), dict(TINY_SIMCLR)], sweep=sweep,
                          **sections)  # fmt: skip


def test_one_key_expands_into_a_labelled_entry_per_value_in_place():
    recipe = recipe_from_dict(swept({"methods.0.mask_ratio": [0.5, 0.75, 0.9]}))
    assert [entry.label for entry in recipe.methods] == [
        "mae-mask_ratio=0.5", "mae-mask_ratio=0.75", "mae-mask_ratio=0.9", "simclr",
    ]  # fmt: skip
    assert [entry.mask_ratio for entry in recipe.methods[:3]] == [0.5, 0.75, 0.9]
    assert recipe.methods[1].sweep_point.of == "mae"
    assert recipe.methods[1].sweep_point.values == {"mask_ratio": 0.75}
    assert recipe.methods[3].sweep_point is None
    assert "sweep_point" not in recipe.methods[0].options()
    assert recipe.sweep == {"methods.0.mask_ratio": [0.5, 0.75, 0.9]}


def test_two_keys_of_one_entry_sweep_their_grid_and_a_label_is_kept():
    mae = {**TINY_MAE, "label": "m"}
    recipe = recipe_from_dict(
        swept({"methods.0.mask_ratio": [0.5, 0.75], "methods.0.decoder_depth": [1, 2]}, [mae])
    )
    assert [(e.mask_ratio, e.decoder_depth) for e in recipe.methods] == [
        (0.5, 1), (0.5, 2), (0.75, 1), (0.75, 2),
    ]  # fmt: skip
    assert recipe.methods[1].label == "m-mask_ratio=0.5-decoder_depth=2"


def test_the_dump_holds_the_expanded_entries_and_validates_to_the_same_recipe():
    recipe = recipe_from_dict(swept({"methods.0.mask_ratio": [0.5, 0.9]}))
    dumped = recipe.model_dump(mode="json")
    assert "sweep" not in dumped
    again = recipe_from_dict(dumped)
    assert again.methods == recipe.methods


def test_a_nested_cli_override_is_the_same_sweep(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(minimal_recipe(methods=[dict(TINY_MAE)])))
    recipe = load_recipe(path, ["sweep.methods.0.mask_ratio=[0.6, 0.8]"])
    assert [entry.mask_ratio for entry in recipe.methods] == [0.6, 0.8]
    assert flatten_sweep({"methods": {"0": {"x": [1]}}}) == {"methods.0.x": [1]}


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"methods.0.mask_ratoi": [0.5]}, "sweep.methods.0.mask_ratoi: unknown key"),
        ({"methods.0.mask_ratio": []}, "sweep.methods.0.mask_ratio must list at least one"),
        ({"methods.0.mask_ratio": 0.5}, "sweep.methods.0.mask_ratio must list at least one"),
        ({"methods.0.mask_ratio": [0.5, 0.5]}, "sweep.methods.0.mask_ratio lists a value twice"),
        ({"methods.2.mask_ratio": [0.5]}, "sweep.methods.2.mask_ratio: the recipe has 2"),
        ({"pretrain.epochs": [1, 2]}, "sweep.pretrain.epochs: only method options"),
        ({"methods.0.label": ["a"]}, "sweep.methods.0.label: 'label' cannot be swept"),
        ({"methods.0.mask_ratio": ["high"]}, "sweep.methods.0.mask_ratio: value 'high' is "),
        ({"methods.0.mask_ratio": [0.5, 1.2]}, "sweep point mae-mask_ratio=1.2: mask_ratio must"),
        (
            {"methods.0.mask_ratio": [0.5], "methods.0.depth": [1], "methods.0.pool": ["cls"]},
            "sweep: methods.0 has more than 2 swept keys",
        ),
        ([0.5], "sweep maps methods.<index>.<option> to a list of values"),
    ],
)
def test_a_bad_sweep_is_one_line_naming_the_key(sweep, message):
    with pytest.raises(RecipeError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        recipe_from_dict(swept(sweep))


def test_errors_after_a_swept_entry_name_the_index_as_written():
    raw = swept({"methods.0.mask_ratio": [0.5, 0.75, 0.9]})
    raw["methods"][1]["temprature"] = 0.2
    with pytest.raises(RecipeError, match="unknown key 'methods.1.temprature'"):
        recipe_from_dict(raw)
    raw["methods"][1] = {**TINY_SIMCLR, "backbone": "vit_nope"}
    with pytest.raises(RecipeError, match="^methods.1.backbone: unknown backbone"):
        recipe_from_dict(raw)
    assert entry_origins(raw) == [0, 0, 0, 1]
    assert written_indices(["mae", "mae", None, None, "b", "b"]) == [0, 0, 1, 2, 3, 3]


@pytest.fixture(scope="module")
def sweep_run(cifar_folder, tmp_path_factory):
    raw = {
        "name": "sweep",
        "output_dir": str(tmp_path_factory.mktemp("runs")),
        "data": {
            "dataset": "imagefolder",
            "root": str(cifar_folder),
            "val_split": "test",
            "image_size": 32,
            "num_workers": 0,
        },
        "methods": [dict(TINY_MAE)],
        "sweep": {"methods.0.mask_ratio": [0.5, 0.75]},
        "pretrain": {"epochs": 1, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "progress_bar": False},
        "eval": {"knn": {"k": 5}, "linear": None, "pixels": False, "batch_size": 64},
    }
    recipe = recipe_from_dict(raw)
    return raw, recipe, run_recipe(recipe, log=lambda _: None)


def test_a_sweep_run_reports_each_point_a_shared_control_and_a_figure(sweep_run):
    _, recipe, report = sweep_run
    labels = [(row["label"], row["control"]) for row in report["rows"]]
    assert labels == [
        ("mae-mask_ratio=0.5", "mae (untrained)"),
        ("mae-mask_ratio=0.75", "mae (untrained)"),
        ("mae (untrained)", None),
    ]  # the mask ratio changes no untrained weight: one control serves both points
    assert report["rows"][1]["sweep_point"] == {"of": "mae", "values": {"mask_ratio": 0.75}}
    assert report["sweep"] == {"methods.0.mask_ratio": [0.5, 0.75]}
    assert report["figures"]["sweep (mae)"] == "sweep_mae.png"
    assert (recipe.run_dir / "figures" / "sweep_mae.png").stat().st_size > 10_000
    markdown = (recipe.run_dir / "report.md").read_text()
    assert "## Sweep" in markdown and "### mae" in markdown
    assert "| mask_ratio | k-NN top1 (95 % CI) | final loss |" in markdown
    assert "\n| 0.75 | " in markdown


def test_a_longer_sweep_reuses_the_points_already_done(sweep_run):
    raw, recipe, _ = sweep_run
    checkpoint = recipe.run_dir / "mae-mask_ratio=0.5" / "checkpoints" / "last.ckpt"
    before = checkpoint.stat().st_mtime_ns
    raw = {**raw, "sweep": {"methods.0.mask_ratio": [0.5, 0.75, 0.9]}}
    report = run_recipe(recipe_from_dict(raw), log=lambda _: None)
    assert checkpoint.stat().st_mtime_ns == before
    assert (recipe.run_dir / "mae-mask_ratio=0.9" / "checkpoints" / "last.ckpt").is_file()
    assert [row["label"] for row in report["rows"] if row.get("sweep_point")] == [
        "mae-mask_ratio=0.5", "mae-mask_ratio=0.75", "mae-mask_ratio=0.9",
    ]  # fmt: skip
