"""The ``ssl-mae`` command.

Exit codes: 0 success, 2 bad input (a one-line message, no traceback, nothing started), 1
failure during a run (the message names what failed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from ssl_mae_plugin.data import DatasetUnavailableError
from ssl_mae_plugin.extras import MissingExtraError
from ssl_mae_plugin.methods.registry import get_method, list_methods
from ssl_mae_plugin.recipe_loading import load_recipe
from ssl_mae_plugin.recipes import Recipe, RecipeError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInputError(Exception):
    """Input the user can fix, found before any work started: one line, exit code 2."""


class RunFailedError(Exception):
    """A failure after work started (exit code 1), whatever its type; it names what failed."""


@contextlib.contextmanager
def work_started() -> Iterator[None]:
    """From here on every error is a run failure (exit 1), never "bad input"."""
    try:
        yield
    except Exception as error:
        raise RunFailedError(f"{type(error).__name__}: {error}") from error


def _first_doc_line(obj: object) -> str:
    line = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
    return re.sub(r"\s*\[\d+(, \d+)*\]", "", line)  # without the docstring's reference marks


def cmd_methods(args: argparse.Namespace) -> int:
    """Print each registered method, its one-line description and its recipe per family."""
    from ssl_mae_plugin.methods.training_recipe import FAMILY_NAMES

    for name in list_methods():
        method = get_method(name)
        print(f"{name}: {_first_doc_line(method)}")
        for family, family_name in FAMILY_NAMES.items():
            recipe = method.recipes.get(family)
            print(f"  {family_name}: {recipe.describe() if recipe else 'not supported'}")
    return EXIT_OK


def load_checked_recipe(args: argparse.Namespace) -> Recipe:
    """The command's recipe with its overrides, checked against this machine's GPUs."""
    from ssl_mae_plugin.pretrain import check_accelerator

    recipe = load_recipe(args.recipe, args.overrides)
    check_accelerator(recipe.trainer)
    return recipe


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain every method of a recipe (resuming from last checkpoints)."""
    from ssl_mae_plugin.pretrain import summarize
    from ssl_mae_plugin.runner import check_plan, pretrain_all

    recipe = load_checked_recipe(args)
    data = check_plan(recipe)
    with work_started():
        pretrain_all(recipe, data)
    for index, entry in enumerate(recipe.methods):
        result = summarize(recipe, index)
        print(
            f"{entry.label}: {result.epochs} epochs, final loss {result.final_loss}, "
            f"{result.images_per_second} images/s, checkpoint {result.checkpoint}"
        )
    return EXIT_OK


def cmd_visualize(args: argparse.Namespace) -> int:
    """Write the four-panel MAE reconstruction figure for some images."""
    import torch

    from ssl_mae_plugin.data import load_image_files
    from ssl_mae_plugin.mae import num_kept
    from ssl_mae_plugin.pretrain import load_mae
    from ssl_mae_plugin.report import save_reconstruction_figure

    try:
        model, normalization = load_mae(args.checkpoint)
        if args.mask_ratio is not None:
            num_kept(model.num_patches, args.mask_ratio)
        if model.img_size[0] != model.img_size[1]:
            raise ValueError(f"visualize needs a square model, got img_size={model.img_size}")
        images = load_image_files(args.images, model.img_size[0], normalization)
    except ValueError as error:
        raise BadInputError(str(error)) from error
    generator = torch.Generator().manual_seed(args.seed)
    with work_started():
        path = save_reconstruction_figure(
            model,
            images,
            args.out,
            mean=normalization.mean,
            std=normalization.std,
            mask_ratio=args.mask_ratio,
            noise=torch.rand(len(images), model.num_patches, generator=generator),
            title=Path(args.checkpoint).name,
        )
    print(f"wrote {path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's backbone in the files of timm, transformers or facebookresearch/mae."""
    from ssl_mae_plugin.export import export

    try:
        written = export(args.checkpoint, args.format, args.out)
    except ValueError as error:
        raise BadInputError(str(error)) from error
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Pretrain, evaluate and report every method of a recipe."""
    from ssl_mae_plugin.runner import check_plan, run_recipe

    recipe = load_checked_recipe(args)
    data = check_plan(recipe)
    with work_started():
        run_recipe(recipe, data=data)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the finished checkpoints and the models of a recipe and write its report."""
    from ssl_mae_plugin.runner import check_plan, run_recipe

    recipe = load_checked_recipe(args)
    data = check_plan(recipe, do_pretrain=False)
    with work_started():
        run_recipe(recipe, do_pretrain=False, data=data)
    return EXIT_OK


def cmd_shards(args: argparse.Namespace) -> int:
    """Write the splits of an image folder as LitData shards for ``data.dataset: shards``."""
    from ssl_mae_plugin.shards import plan_shards, write_split

    try:
        plans = plan_shards(args.source, args.out, args.splits, args.chunk_bytes)
    except ValueError as error:
        raise BadInputError(str(error)) from error
    for plan in plans:
        with work_started():
            info = write_split(plan, args.chunk_bytes, args.workers, args.seed)
        print(f"wrote {plan.out}: {info['images']} images of {len(info['classes'])} classes")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ssl-mae``."""
    parser = argparse.ArgumentParser(
        prog="ssl-mae",
        description="Masked Autoencoders and other SSL methods: pretrain, evaluate, report.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    methods = commands.add_parser("methods", help="list registered methods")
    methods.set_defaults(handler=cmd_methods)

    def recipe_command(name: str, help_text: str, handler) -> None:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("recipe", help="path to a YAML recipe")
        sub.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="dotted overrides, e.g. pretrain.epochs=10 methods.0.mask_ratio=0.9",
        )
        sub.set_defaults(handler=handler)

    recipe_command("run", "pretrain + evaluate + report, every method in the recipe", cmd_run)
    recipe_command("pretrain", "pretrain only (resumes from the last checkpoint)", cmd_pretrain)
    recipe_command("eval", "evaluate checkpoints and models: entries, write the report", cmd_eval)

    visualize = commands.add_parser(
        "visualize",
        help="MAE reconstructions of images",
        description="Original | masked | reconstruction | reconstruction + visible, one row "
        "per image, from an ssl-mae checkpoint (.ckpt) or a facebookresearch/mae one (.pth).",
    )
    visualize.add_argument("checkpoint", help="last.ckpt of an MAE run, or an official .pth")
    visualize.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    visualize.add_argument("--out", required=True, help="PNG file to write")
    visualize.add_argument("--mask-ratio", type=float, default=None, help="default: the model's")
    visualize.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    visualize.set_defaults(handler=cmd_visualize)

    export = commands.add_parser(
        "export",
        help="a run's backbone for timm, transformers or facebookresearch/mae",
        description="timm: the ViT encoder as model.safetensors + config.json (a folder); "
        "hf: an MAE as a transformers ViTMAEForPreTraining folder; official: an MAE as a "
        "facebookresearch/mae .pth file.",
    )
    export.add_argument("checkpoint", help="last.ckpt of a run")
    export.add_argument("--format", required=True, choices=("timm", "hf", "official"))
    export.add_argument("--out", required=True, help="folder (timm, hf) or .pth file (official)")
    export.set_defaults(handler=cmd_export)

    shards = commands.add_parser(
        "shards",
        help="an image folder as LitData shards (data.dataset: shards)",
        description="Write each split SOURCE/<split>/<class>/* to OUT/<split>/ as LitData "
        "chunks: the original image bytes and labels, in a seeded order mixing the classes.",
    )
    shards.add_argument("source", metavar="SOURCE", help="image folder: SOURCE/<split>/<class>/*")
    shards.add_argument("out", metavar="OUT", help="output folder; OUT/<split>/ missing or empty")
    shards.add_argument(
        "--splits", nargs="+", metavar="SPLIT", help="default: every sub-folder of SOURCE"
    )
    shards.add_argument("--chunk-bytes", default="64MB", help="size of a chunk file (64MB)")
    shards.add_argument(
        "--workers", type=int, default=4, help="processes reading the files (4; 0: this one)"
    )
    shards.add_argument("--seed", type=int, default=0, help="seed of the sample order (0)")
    shards.set_defaults(handler=cmd_shards)
    return parser


def quiet_libraries() -> None:
    """Keep Lightning's banners and tips off the console; our own lines say what happens."""
    for name in (
        "pytorch_lightning",
        "lightning",
        "lightning_fabric",
        "lightning.pytorch",
        "litdata",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*LeafSpec.*", ".*does not have many workers.*", ".*in eval mode.*"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ssl-mae``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        return args.handler(args)
    except (
        BadInputError,
        RecipeError,
        DatasetUnavailableError,
        FileNotFoundError,
        MissingExtraError,
    ) as error:
        print(f"ssl-mae: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:
        logging.getLogger("ssl_mae_plugin").exception("ssl-mae %s failed", args.command)
        message = (
            str(error) if isinstance(error, RunFailedError) else f"{type(error).__name__}: {error}"
        )
        print(f"ssl-mae: failed: {message}", file=sys.stderr)
        return EXIT_FAILURE


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
