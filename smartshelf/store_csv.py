"""The store's CSV format (the files PostgreSQL loads): writing rows as text, and reading all five files back —
one store's from a folder, a chain's from one folder per store, named by its id."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from smartshelf.errors import SmartShelfError
from smartshelf.schemas import FIRST_STORE
from smartshelf.store import REFERENCE_FILES, STORE_INVENTORY, StoreData, columns, consistency_problems, is_store_id

_MAX_LISTED = 20  # further problems listed under the first line; the count covers the rest


def csv_text(model: type[BaseModel], rows: Sequence[BaseModel]) -> str:
    """A header plus one line per row, '\\n'-terminated; floats as repr (shortest exact), dates ISO."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = columns(model)
    writer.writerow(names)
    writer.writerows([_cell(getattr(row, name)) for name in names] for row in rows)
    return buffer.getvalue()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def read_store_csvs(csv_dir: Path, store_id: str = FIRST_STORE) -> StoreData:
    """The store as the CSVs in csv_dir hold it, every row and cross-file rule checked.

    Raises SmartShelfError naming the first problem (file, line, column) and how many more there are.
    all_discounts.csv is optional (no discounts); the other four files are required.
    """
    problems: list[str] = []
    tables: dict[str, list[BaseModel]] = {}
    lines: dict[str, list[int]] = {}
    for table in REFERENCE_FILES:
        path = csv_dir / table.csv_name
        if path.is_file():
            tables[table.attr], lines[table.csv_name] = _read_rows(path, table.model, problems)
        else:
            if table.required:
                problems.append(f"missing {table.csv_name} in {csv_dir}")
            tables[table.attr], lines[table.csv_name] = [], []
    if problems:
        raise _error(problems)
    store = StoreData(**tables, store_id=store_id)  # type: ignore[arg-type]  # each list holds its table's model
    problems = [p.render(f"line {lines[p.file][p.row]}") for p in consistency_problems(store)]
    if problems:
        raise _error(problems)
    return store


def chain_csv_dirs(csv_dir: Path, single_store: str) -> dict[str, Path]:
    """Where each store's reference CSVs are: csv_dir itself if it holds them (one store, named `single_store`),
    else each subfolder that holds them, named by its store's id (a chain); empty if there are none."""
    if not csv_dir.is_dir():
        raise SmartShelfError(f"{csv_dir} is not a folder")
    loose = [table.csv_name for table in REFERENCE_FILES if (csv_dir / table.csv_name).exists()]
    folders = sorted(path for path in csv_dir.iterdir()
                     if path.is_dir() and any((path / table.csv_name).exists() for table in REFERENCE_FILES))
    if loose and folders:
        raise SmartShelfError(f"{csv_dir} holds one store's {loose[0]} and store folders ({folders[0].name}, …): "
                              "keep one layout, the five files or one folder of them per store")
    if loose:
        return {single_store: csv_dir}
    misnamed = [path.name for path in folders if not is_store_id(path.name)]
    if misnamed:
        raise SmartShelfError(f"{csv_dir / misnamed[0]}: a store's folder is named by its id "
                              "(lower-case letters, digits, '-' and '_', at most 63)")
    return {path.name: path for path in folders}


def read_chain_csvs(csv_dir: Path, single_store: str) -> dict[str, StoreData]:
    """Every store csv_dir holds (chain_csv_dirs), each read and checked as read_store_csvs does; a problem is
    named with its store."""
    dirs = chain_csv_dirs(csv_dir, single_store)
    if not dirs:
        raise SmartShelfError(f"no store in {csv_dir}: expected {STORE_INVENTORY} and the other reference files, "
                              "or one folder of them per store")
    chain = {}
    for store_id, path in dirs.items():
        try:
            chain[store_id] = read_store_csvs(path, store_id)
        except SmartShelfError as exc:
            if path == csv_dir:  # one store: its problem reads as before
                raise
            raise SmartShelfError(f"store {store_id} ({path}): {exc}") from exc
    return chain


def _read_rows(path: Path, model: type[BaseModel], problems: list[str]) -> tuple[list[BaseModel], list[int]]:
    """The valid rows of one file and their line numbers (header = line 1); the rest become problems."""
    rows: list[BaseModel] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets prepend a BOM
            reader = csv.reader(handle, strict=True)
            header_problem = _header_problem(path.name, next(reader, None), columns(model))
            if header_problem:
                problems.append(header_problem)
                return [], []
            for values in reader:
                row = _parse_row(path.name, reader.line_num, model, values, problems)
                if row is not None:
                    rows.append(row)
                    lines.append(reader.line_num)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(f"{path.name} is not a readable UTF-8 CSV file: {exc}")
    return rows, lines


def _header_problem(name: str, header: list[str] | None, expected: tuple[str, ...]) -> str | None:
    wanted = ",".join(expected)
    if header is None:
        return f"{name} is empty; its first line must be the header {wanted}"
    if tuple(header) == expected:
        return None
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    details = [f"missing column(s) {', '.join(missing)}"] if missing else []
    details += [f"unexpected column(s) {', '.join(extra)}"] if extra else []
    # Same names, different order or repeated: the header itself shows what is wrong.
    found = "; ".join(details) or f"got {','.join(header)}"
    return f"{name} line 1: wrong header ({found}); expected exactly {wanted}"


def _parse_row(
    name: str, line: int, model: type[BaseModel], values: list[str], problems: list[str]
) -> BaseModel | None:
    names = columns(model)
    if len(values) != len(names):
        problems.append(f"{name} line {line}: expected {len(names)} values, got {len(values)}")
        return None
    # An empty cell is left out, so pydantic reports the column as missing rather than coercing ''.
    try:
        return model.model_validate({column: value for column, value in zip(names, values) if value != ""})
    except ValidationError as exc:
        problems.extend(_describe(name, line, error) for error in exc.errors())
        return None


def _describe(name: str, line: int, error: ErrorDetails) -> str:
    if not error["loc"]:  # a rule across columns: its message names them
        return f"{name} line {line}: {error['msg']}"
    column = error["loc"][0]
    if error["type"] == "missing":
        return f"{name} line {line}, column {column}: value is required but empty"
    return f"{name} line {line}, column {column}: {error['msg']} (got {error['input']!r})"


def _error(problems: list[str]) -> SmartShelfError:
    first, rest = problems[0], problems[1:]
    if not rest:
        return SmartShelfError(first)
    noun = "problem" if len(rest) == 1 else "problems"
    listed = [f"  {problem}" for problem in rest[:_MAX_LISTED]]
    return SmartShelfError("\n".join([f"{first} (and {len(rest)} more {noun})", *listed]))
