"""Add bytecode to the pyspark.zip that Spark puts first on its Python workers' path.

Spark starts some Python processes of its own afresh (a streaming query's source runner, planning workers)
with `pyspark/python/lib/pyspark.zip` ahead of the venv on their path. A zip holds no `__pycache__`, so each such
process compiled pyspark's sources again: ~0.45 s of CPU per process, paid at every query start (measured in
docs/architecture.md, "Throughput"). This writes each module's bytecode next to its source inside the zip, as
unchecked-hash .pyc files, which zipimport loads before the .py; an interpreter of another version ignores
them and compiles the source as before. Idempotent; bootstrap.sh runs it after every pip install.
"""

from __future__ import annotations

import compileall
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from py_compile import PycInvalidationMode

import pyspark


def pyspark_zip() -> Path:
    return Path(pyspark.__file__).parent / "python" / "lib" / "pyspark.zip"


def is_compiled(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return "pyspark/__init__.pyc" in archive.namelist()


def compile_zip(path: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tree)
        if not compileall.compile_dir(tree, quiet=1, legacy=True, workers=1, rx=re.compile(r"/tests/"),
                                      invalidation_mode=PycInvalidationMode.UNCHECKED_HASH):
            raise SystemExit(f"compile_pyspark_zip: some modules of {path} did not compile")
        staged = path.with_name(path.name + ".staged")  # beside it: os.replace cannot cross file systems
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(tree.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(tree).as_posix())
        os.replace(staged, path)


def main() -> None:
    path = pyspark_zip()
    if not path.exists():  # a pyspark without the zip: its workers import the installed package
        return
    if not is_compiled(path):
        compile_zip(path)
        print(f"compile_pyspark_zip: added bytecode to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
