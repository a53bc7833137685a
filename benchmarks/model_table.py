"""Print the README's model table: parameters and multiply-accumulates of every registered model.

    python benchmarks/model_table.py [--image-size 224]
    python benchmarks/model_table.py --quick     # the resnet18 family at 32 px: a smoke run

Counts come from ``model_stats`` (torch.utils.flop_counter) on a meta-device model, so nothing
is allocated and the whole table takes a few seconds.
"""

import argparse

import torch

from bagoftricks.models import create_model, list_models, model_stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--quick", action="store_true", help="the resnet18 family at 32 px: a smoke test of the script")
    args = parser.parse_args(argv)
    names = [name for name in list_models() if name.startswith("resnet18") or not args.quick]
    if args.quick:
        args.image_size = 32
    print(f"| model | params | GMACs at {args.image_size} px |")
    print("|---|---:|---:|")
    depth = lambda name: int("".join(c for c in name if c.isdigit()))  # noqa: E731
    for name in sorted(names, key=lambda n: (depth(n), n)):
        with torch.device("meta"):
            model = create_model(name, 1000)
        stats = model_stats(model, args.image_size)
        print(f"| `{name}` | {stats['params']:,} | {stats['macs'] / 1e9:.2f} |")


if __name__ == "__main__":
    main()
