"""Reading the label CSVs people actually have: a UTF-8 BOM, ``;`` or tab
delimiters, stray spaces and capitals in column names, short rows."""

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path

from skinfeat.core.errors import DataError
from skinfeat.data.manifest import error, warning
from skinfeat.imaging.images import read_file

DELIMITERS = {",": "','", ";": "';'", "\t": "tab"}
_SHOWN = 12  # column names listed in a message
_UTF16 = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class Table:
    """A CSV file: its column names (stripped) and its rows as ``(line number, {column: value})``."""

    path: str
    columns: list
    rows: list
    problems: list = field(default_factory=list)

    def column(self, name):
        """The column called ``name`` in any case, or None."""
        return next((c for c in self.columns if c.lower() == name.lower()), None)

    def require(self, name, purpose):
        """The column called ``name`` in any case; a DataError naming the close match when absent."""
        found = self.column(name)
        if found is None:
            raise DataError(f"{self.path}: no column '{name}' ({purpose}); {_columns_hint(self.columns, name)}")
        return found


def close_matches(name, candidates, cutoff=0.6):
    """Candidates that look like ``name``, ignoring case; best first."""
    lowered = {c.lower(): c for c in candidates}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=cutoff)]


def shorten(columns):
    """Column names for a message: the first few, and how many more."""
    shown = ", ".join(c[:40] for c in columns[:_SHOWN]) or "(none)"
    return shown + (f" and {len(columns) - _SHOWN:,} more" if len(columns) > _SHOWN else "")


def _columns_hint(columns, name):
    close = close_matches(name, columns)
    if close:
        return f"found '{close[0]}': rename it to '{name}'"
    return f"the columns are {shorten(columns)}; add a '{name}' column"


def _check_unique(path, columns):
    """DataError when two columns have one name, ignoring case and spaces (empty names may repeat)."""
    first = {}
    for i, name in enumerate(columns):
        if name and first.setdefault(name.lower(), i) != i:
            j = first[name.lower()]
            raise DataError(f"{path}:1: columns {j + 1} ('{columns[j]}') and {i + 1} ('{name}') have one name "
                            "(ignoring case and spaces), so which one counts is ambiguous; expected each column "
                            "name once: rename or delete one of them")


def read_table(path):
    """Read a CSV into a :class:`Table`, noting a BOM or a non-comma delimiter as warnings.
    DataError naming the file (and line) when it is not a CSV: not a regular file,
    binary or not UTF-8, a field over csv.field_size_limit(), a column name twice."""
    raw = read_file(path)
    if raw.startswith(_UTF16):
        raise DataError(f"{path}: UTF-16 text; expected a UTF-8 CSV: re-save it as 'CSV UTF-8'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}); expected a UTF-8 CSV: re-save it as 'CSV UTF-8'"
        ) from None
    if "\0" in text:
        raise DataError(f"{path}: binary data or UTF-16 text (a NUL byte at character {text.index(chr(0))}), "
                        "not a UTF-8 CSV; expected a CSV: re-save it as 'CSV UTF-8'")
    problems = []
    if text.startswith("\ufeff"):
        text = text[1:]
        problems.append(warning("starts with a UTF-8 byte-order mark (BOM); skinfeat ignores it, "
                                "but other tools may read the first column as '\\ufeff...': re-save without BOM",
                                f"{path}:1"))
    header_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=header_line.count)
    if header_line.count(delimiter) == 0:
        delimiter = ","
    if delimiter != ",":
        problems.append(warning(f"columns are separated by {DELIMITERS[delimiter]}, not ','; skinfeat reads it, "
                                "but re-save as comma-separated CSV for other tools", f"{path}:1"))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path}: empty file or empty header line; expected a CSV whose first line names "
                            "the columns")
        columns = [h.strip() for h in header]
        _check_unique(path, columns)
        rows = []
        for values in reader:
            values = [v.strip() for v in values]
            if not any(values):
                continue
            if len(values) != len(columns):
                problems.append(error(f"row has {len(values)} fields but the header has {len(columns)}; row "
                                      "skipped: fix the quoting or the number of fields", f"{path}:{reader.line_num}"))
                continue
            rows.append((reader.line_num, dict(zip(columns, values))))
    except csv.Error as exc:  # a field over csv.field_size_limit(), often an unclosed quote
        raise DataError(f"{path}:{reader.line_num}: {exc}; expected a CSV of short fields: "
                        "look for a quote (\") that is never closed") from None
    return Table(str(path), columns, rows, problems)


def read_header(path):
    """The stripped, lower-cased column names of a CSV (BOM and delimiter tolerated), or [] if unreadable."""
    try:
        if not Path(path).is_file():  # a FIFO would block
            return []
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            line = f.readline(1 << 20)
    except OSError:
        return []
    delimiter = max(DELIMITERS, key=line.count)
    return [c.strip().lower() for c in next(csv.reader([line], delimiter=delimiter), [])]
