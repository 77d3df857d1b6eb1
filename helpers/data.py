"""The course's own data sets in data/, and the text the stand-ins learn from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def data_path(*parts: str) -> Path:
    """Path of a file or folder inside data/ (raises if it is missing)."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is not in the course's data/ folder")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file; a malformed line is reported with its file and line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows as JSON Lines (UTF-8, one object per line)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def corpus_texts(include_datasets: bool = True) -> list[str]:
    """The course's own text: data/standin_corpus/*.txt and every string in data/**/*.jsonl.

    The tiny stand-ins train their tokenizer on all of it, so their vocabulary covers the
    words the notebooks use, and pre-train on the corpus alone
    (``include_datasets=False``). The order is fixed (sorted paths).
    """
    texts = []
    for path in sorted(DATA_DIR.glob("standin_corpus/*.txt")):
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for path in sorted(DATA_DIR.rglob("*.jsonl")) if include_datasets else []:
        for row in read_jsonl(path):
            texts += [s for s in _strings(row) if s.strip()]
    return texts
