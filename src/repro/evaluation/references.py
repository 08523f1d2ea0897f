"""Reference numbers of the reproduced papers (LongLoRA, SimCSE), read from one packaged data file.

``paper_numbers.yaml`` (next to this module) holds, per paper, the tables transcribed from the
paper's text with their table/figure reference and caption, the numbers the paper states only in
running text (``claims``, each with its provenance), and the tables that could not be transcribed
(``missing``). Reports iterate it to print the paper's number beside ours; this module loads it,
checks its shape once, and answers look-ups with errors that name the paper, key and field.

Example:
    >>> row = lookup("simcse", "table5_sts_main", model="simcse-bert-base", setting="unsup")
    >>> dict(zip(get_table("simcse", "table5_sts_main")["columns"], row["values"]))["avg"]
    76.25
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

DATA_PACKAGE = "repro.evaluation"
DATA_FILE = "paper_numbers.yaml"

TABLE_FIELDS = ("ref", "caption", "metric", "columns", "rows")
CLAIM_FIELDS = ("ref", "statement", "metric", "values", "provenance")
PROVENANCES = ("primary", "secondary", "author_answer", "third_party")


class PaperNumbersError(ValueError):
    """The reference-number data does not have the documented shape."""


def _is_number(value: Any) -> bool:
    """True for a real (non-bool) finite number; YAML gives ints for cells written without a dot."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_table(where: str, table: Any) -> None:
    if not isinstance(table, Mapping):
        raise PaperNumbersError(f"{where}: a table must be a mapping, got {type(table).__name__}")
    absent = [name for name in TABLE_FIELDS if name not in table]
    if absent:
        raise PaperNumbersError(f"{where}: missing field(s) {absent}; a table needs {list(TABLE_FIELDS)}")
    columns = table["columns"]
    if not isinstance(columns, list) or not columns:
        raise PaperNumbersError(f"{where}.columns: must be a non-empty list")
    if len(set(map(str, columns))) != len(columns):
        raise PaperNumbersError(f"{where}.columns: duplicate column names in {columns}")
    rows = table["rows"]
    if not isinstance(rows, list) or not rows:
        raise PaperNumbersError(f"{where}.rows: must be a non-empty list")
    if "provenance" in table and table["provenance"] not in PROVENANCES:
        raise PaperNumbersError(f"{where}.provenance: {table['provenance']!r} is not one of {list(PROVENANCES)}")
    for i, row in enumerate(rows):
        at = f"{where}.rows[{i}]"
        if not isinstance(row, Mapping) or "values" not in row:
            raise PaperNumbersError(f"{at}: a row must be a mapping with a 'values' list")
        values = row["values"]
        if not isinstance(values, list) or len(values) != len(columns):
            got = len(values) if isinstance(values, list) else type(values).__name__
            raise PaperNumbersError(f"{at}.values: expected {len(columns)} cells (one per column), got {got}")
        for j, value in enumerate(values):
            if value is not None and not _is_number(value):
                raise PaperNumbersError(f"{at}.values[{j}] ({columns[j]}): {value!r} is neither a number nor null")


def _check_claim(where: str, claim: Any) -> None:
    if not isinstance(claim, Mapping):
        raise PaperNumbersError(f"{where}: a claim must be a mapping, got {type(claim).__name__}")
    absent = [name for name in CLAIM_FIELDS if name not in claim]
    if absent:
        raise PaperNumbersError(f"{where}: missing field(s) {absent}; a claim needs {list(CLAIM_FIELDS)}")
    if claim["provenance"] not in PROVENANCES:
        raise PaperNumbersError(f"{where}.provenance: {claim['provenance']!r} is not one of {list(PROVENANCES)}")
    values = claim["values"]
    if not isinstance(values, Mapping) or not values:
        raise PaperNumbersError(f"{where}.values: must be a non-empty mapping of name -> number")
    for name, value in values.items():
        if value is not None and not _is_number(value):
            raise PaperNumbersError(f"{where}.values.{name}: {value!r} is neither a number nor null")


def validate_paper_numbers(data: Any) -> None:
    """Check the documented shape of the reference-number data.

    Every paper needs a ``source`` with an ``arxiv`` id; every table needs ``ref``, ``caption``,
    ``metric``, non-empty ``columns`` and ``rows``, and each row a ``values`` list with one number
    (or null for a blank cell) per column; every claim needs ``ref``, ``statement``, ``metric``,
    numeric ``values`` and a ``provenance`` (primary, secondary, author_answer, third_party); a table
    may carry a ``provenance`` too, and either may keep its source's wording in ``provenance_label``.

    Args:
        data: The parsed YAML document.

    Raises:
        PaperNumbersError: At the first problem, naming its path (``paper.tables.key.rows[i]...``).
    """
    if not isinstance(data, Mapping) or not data:
        raise PaperNumbersError("top level: expected a non-empty mapping of paper -> section")
    for paper, section in data.items():
        if not isinstance(section, Mapping):
            raise PaperNumbersError(f"{paper}: expected a mapping, got {type(section).__name__}")
        source = section.get("source")
        if not isinstance(source, Mapping) or not source.get("arxiv"):
            raise PaperNumbersError(f"{paper}.source: needs a mapping with an 'arxiv' id (with version)")
        tables = section.get("tables", {}) or {}
        if not isinstance(tables, Mapping):
            raise PaperNumbersError(f"{paper}.tables: expected a mapping of key -> table")
        for key, table in tables.items():
            _check_table(f"{paper}.tables.{key}", table)
        claims = section.get("claims", {}) or {}
        if not isinstance(claims, Mapping):
            raise PaperNumbersError(f"{paper}.claims: expected a mapping of key -> claim")
        for key, claim in claims.items():
            _check_claim(f"{paper}.claims.{key}", claim)


@functools.lru_cache(maxsize=1)
def _load_cached() -> dict:
    text = resources.files(DATA_PACKAGE).joinpath(DATA_FILE).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PaperNumbersError(f"{DATA_PACKAGE}/{DATA_FILE}: not valid YAML: {err}") from err
    validate_paper_numbers(data)
    return data


def load_paper_numbers() -> dict:
    """Load and validate the packaged ``paper_numbers.yaml``.

    The file is parsed and checked once per process; each call returns a deep copy, so a caller
    that edits the result cannot change what later callers see.

    Returns:
        ``{paper: {"source": ..., "tables": ..., "claims": ..., "missing": ...}}``.
    """
    return copy.deepcopy(_load_cached())


def _paper(paper: str) -> dict:
    data = _load_cached()
    if paper not in data:
        raise KeyError(f"unknown paper {paper!r}; available: {sorted(data)}")
    return data[paper]


def get_table(paper: str, key: str) -> dict:
    """Return one transcribed table (a copy).

    Args:
        paper: ``"longlora"`` or ``"simcse"``.
        key: Stable table key, e.g. ``"table5_sts_main"``.

    Raises:
        KeyError: For an unknown paper or table; the message lists the available keys and, for a
            table that could not be transcribed, points at the paper's ``missing`` list.
    """
    section = _paper(paper)
    tables = section.get("tables") or {}
    if key not in tables:
        missing = [entry.get("ref") for entry in section.get("missing") or []]
        hint = f"; not transcribed for {paper}: {missing}" if missing else ""
        raise KeyError(f"no table {key!r} for {paper}; available: {sorted(tables)}{hint}")
    return copy.deepcopy(tables[key])


def get_claim(paper: str, key: str) -> dict:
    """Return one number stated in a paper's running text (a copy); KeyError lists the available keys."""
    claims = _paper(paper).get("claims") or {}
    if key not in claims:
        raise KeyError(f"no claim {key!r} for {paper}; available: {sorted(claims)}")
    return copy.deepcopy(claims[key])


def lookup(paper: str, key: str, **row_filters: Any) -> dict:
    """Return the one row of a table whose fields equal all of ``row_filters``.

    Args:
        paper: Paper key.
        key: Table key.
        **row_filters: Row fields to match exactly, e.g. ``model="simcse-bert-base", setting="unsup"``.

    Returns:
        A copy of the matching row, ``values`` aligned with the table's ``columns``.

    Raises:
        KeyError: Unknown paper/table, or a filter naming a field no row of the table has.
        LookupError: No row matches, or more than one does (the message lists what would disambiguate).
    """
    table = get_table(paper, key)
    rows = table["rows"]
    fields = sorted({name for row in rows for name in row if name != "values"})
    unknown = sorted(set(row_filters) - set(fields))
    if unknown:
        raise KeyError(f"{paper}.{key}: unknown row field(s) {unknown}; rows have {fields}")
    matches = [row for row in rows if all(row.get(name) == want for name, want in row_filters.items())]
    if not matches:
        raise LookupError(f"{paper}.{key}: no row matches {row_filters}; row fields are {fields}")
    if len(matches) > 1:
        shown = [{name: row.get(name) for name in fields} for row in matches]
        raise LookupError(f"{paper}.{key}: {len(matches)} rows match {row_filters}, add filters: {shown}")
    return copy.deepcopy(matches[0])
