"""Generate the synthetic store: Parquet snapshots in --out and the CSVs PostgreSQL loads in --out/db_csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from smartshelf.datagen import generate_store, write_store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=42, help="the same seed gives byte-identical files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="default: this data/ dir")
    args = parser.parse_args(argv)
    for path in write_store(generate_store(args.seed), args.out):
        print(path)


if __name__ == "__main__":
    main()
