"""Images/s of ``data.decode: device``: JPEGs decoded and cropped on the training device.

The JPEGs are those of ``decoding.py`` (varied crops of the photos scikit-image ships,
~500 x 375 and ~1000 x 750, quality 90), written once by ``--write-photos DIR`` (the GPU
machine may lack scikit-image: the folder travels with the checkout). Per source size and
output side (224, 128), in turns pass by pass, median of the passes:

- ``loader``: what a loader process does per image for device decoding (read the bytes and
  the header: ``EncodedSamples``), one process, one thread;
- ``full decode``: what it does per image for ``data.decode: full`` (PIL decode +
  lightly's ``MAETransform``), the same;
- ``device``: ``DeviceDecodeViews`` on batches of ``--batch`` samples already read (the
  main process's share: decode + crops + flip + normalise), synchronised per batch; on a
  GPU the batch's JPEGs are one nvJPEG call; on the CPU libjpeg-turbo, one thread;
- ``device decode only``: the decoding part of it.

Run: ``.venv/bin/python benchmarks/device_decode.py --photos DIR --device cpu --out F.json``
on an idle machine (``--dry-run``: a few images, one pass, nothing written);
``--markdown A.json [B.json ...]`` writes DEVICE_DECODE.md from results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import HERE, command_line, machine_info, markdown_table, summarize, write_json

from ssl_mae_plugin.data import ImageFolderDataset, LabelledSubset, Normalization
from ssl_mae_plugin.pretrain.device_decode import DeviceDecodeViews, EncodedSamples

SIZES = ("500x375", "1000x750")
OUTPUTS = (224, 128)
NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PACKAGES = ("pillow", "lightly")


def write_photos(out: Path) -> None:
    """The JPEGs of ``decoding.py``, one folder per source size."""
    import decoding

    for name in SIZES:
        decoding.write_photos(out / name, decoding.SIZES[name])
        print("wrote", out / name)


def timed(work, count: int) -> float:
    """Images/s of ``work()`` for ``count`` images, the device synchronised after it."""
    start = time.perf_counter()
    work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def measure(folder: Path, output: int, device: torch.device, args: argparse.Namespace) -> dict:
    from lightly.transforms import MAETransform

    from ssl_mae_plugin.pretrain.sampling import SeededViews

    images = ImageFolderDataset(folder)
    repeated = LabelledSubset(images, list(range(len(images))) * args.copies)
    samples = EncodedSamples(repeated, seed=0)
    views = DeviceDecodeViews(samples, output, NORM, (0.2, 1.0))
    mae = MAETransform(input_size=output, min_scale=0.2, normalize=NORM.as_lightly())
    full = SeededViews(repeated, mae)
    count = len(samples)
    rates: dict[str, list[float]] = {
        "loader": [],
        "full decode": [],
        "device": [],
        "device decode only": [],
    }
    views([samples[(i, 0)] for i in range(min(args.batch, count))], device)  # warm-up
    read: list = []
    for epoch in range(args.passes):
        keys = [(i, epoch) for i in range(count)]
        read.clear()
        rates["loader"].append(timed(lambda k=keys: read.extend(samples[key] for key in k), count))
        rates["full decode"].append(
            timed(lambda e=epoch: [full[(i, e)] for i in range(count)], count)
        )
        batches = [read[i : i + args.batch] for i in range(0, count, args.batch)]
        rates["device"].append(timed(lambda b=batches: [views(x, device) for x in b], count))
        rates["device decode only"].append(
            timed(lambda b=batches: [views.decode(x, device) for x in b], count)
        )
    jpegs = sum(is_jpeg for _, is_jpeg, *_ in read)
    return {
        "source": folder.name,
        "output": output,
        "samples": count,
        "device_jpegs": jpegs,
        "images_per_second": {name: summarize(values) for name, values in rates.items()},
    }


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    device = torch.device(args.device)
    info = machine_info(PACKAGES, driver=device.type == "cuda")
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    results = []
    for name in SIZES:
        for output in OUTPUTS:
            row = measure(args.photos / name, output, device, args)
            results.append(row)
            medians = {k: round(v["median"], 1) for k, v in row["images_per_second"].items()}
            print(name, output, medians, flush=True)
    result = {
        "command": command_line(),
        "device": str(device),
        "batch": args.batch,
        "passes": args.passes,
        "machine": info,
        "results": results,
    }
    if args.out:
        write_json(args.out, result)


def markdown(paths: list[Path]) -> str:
    """The text of ``DEVICE_DECODE.md`` for the results in ``paths``."""
    sections = []
    for path in paths:
        result = json.loads(path.read_text())
        machine = result["machine"]
        where = machine.get("gpu") or f"{machine['cpu']}, {machine['affinity_cores']} cores"
        rows = []
        for row in result["results"]:
            rate = {k: v["median"] for k, v in row["images_per_second"].items()}
            rows.append(
                [
                    row["source"],
                    str(row["output"]),
                    f"{rate['loader']:,.0f}",
                    f"{rate['full decode']:,.0f}",
                    f"{rate['loader'] / rate['full decode']:.1f}x",
                    f"{rate['device']:,.0f}",
                    f"{rate['device'] / rate['full decode']:.2f}x",
                    f"{rate['device decode only']:,.0f}",
                    f"{row['device_jpegs']} / {row['samples']}",
                ]
            )
        table = markdown_table(
            [
                "source JPEG",
                "output px",
                "loader img/s per core (bytes + header)",
                "full decode img/s per core (PIL + MAETransform)",
                "loader / full",
                f"device img/s ({result['device']}: decode + crops)",
                "device / full",
                "device decode only img/s",
                "JPEGs to the device decoder",
            ],
            rows,
            left=2,
        )
        sections.append(
            f"""## {result["device"]}: {where}

`{result["command"]}`; batches of {result["batch"]}, median of {result["passes"]} passes;
torch {machine["torch"]}, Pillow {machine["libraries"].get("pillow")}.

{table}
"""
        )
    return """# Device decoding: JPEGs decoded and cropped on the training device

Written by `benchmarks/device_decode.py --markdown` from the JSON files named below each
heading (numbers are those runs'). `data.decode: device` leaves the loader processes only
the bytes and the header of each file; the main process decodes a batch on the training
device (nvJPEG on a GPU) and makes MAE's views there. "loader / full" is how many more
images a loader core serves than with a full PIL decode; the device columns are the main
process's rate for the rest (decode, crop, flip, normalise) on the device named, and
"device / full" compares it with the full PIL pipeline of one loader core. On a CPU
run the device is the main process's core, between training steps, where `full` decodes
in parallel loader processes.

""" + "\n".join(sections)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="folder of --write-photos")
    parser.add_argument("--write-photos", type=Path, metavar="DIR")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--copies", type=int, default=1, help="each file this many times")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path, nargs="+", metavar="JSON")
    parser.add_argument("--dry-run", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.write_photos:
        write_photos(arguments.write_photos)
    elif arguments.markdown:
        (HERE / "DEVICE_DECODE.md").write_text(markdown(arguments.markdown))
    else:
        if arguments.dry_run:
            arguments.passes, arguments.out = 1, None
        main(arguments)
