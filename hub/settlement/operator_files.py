"""Reading the grid operator's file from disk, in whichever layout it comes.

Two layouts are read: the documented generic CSV (:func:`.reconcile.parse_operator_csv`) and
Fluvius's consumption-history export (:mod:`.fluvius`), told apart by the header line. Each file
is named in the records by its name and the start of its SHA-256, so the ledger can say which
figures a day was settled on and a corrected file is told apart from the first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hub.settlement.fluvius import looks_like_fluvius, parse_fluvius_csv
from hub.settlement.reconcile import (
    OfficialFigures,
    OperatorFile,
    ReconcileError,
    load_map,
    parse_operator_csv,
)


def read_operator_file(path: Path) -> OperatorFile:
    """The operator's file, parsed; :class:`ReconcileError` names the file and what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReconcileError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ReconcileError(f"{path} is not UTF-8 text") from None
    parse = parse_fluvius_csv if looks_like_fluvius(text.partition("\n")[0]) else parse_operator_csv
    try:
        parsed = parse(text)
    except ReconcileError as exc:
        raise ReconcileError(f"{path}: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return OperatorFile(parsed.rows, parsed.step_ms, f"{path.name} sha256:{digest}")


def load_official(file_path: Path, map_path: Path) -> OfficialFigures:
    """The operator's file and the metering-point map, for ``settle --official``."""
    return OfficialFigures(read_operator_file(file_path), load_map(map_path))
