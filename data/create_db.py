"""Generate the synthetic store: Parquet snapshots in --out and the CSVs PostgreSQL loads in --out/db_csv.

With --load-if-empty (compose's store-init): load the store into PostgreSQL unless one is loaded, generating
it first if data/db_csv has none.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smartshelf.datagen import generate_store, write_store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=42, help="the same seed gives byte-identical files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="default: this data/ dir")
    parser.add_argument("--load-if-empty", action="store_true", help="load into PostgreSQL unless loaded")
    args = parser.parse_args(argv)
    if args.load_if_empty:
        from smartshelf.runtime.jobs import store_init
        from smartshelf.settings import get_settings

        print("\n".join(store_init(get_settings())) or "a store is already loaded")
        return
    for path in write_store(generate_store(args.seed), args.out):
        print(path)


if __name__ == "__main__":
    main()
