"""Read rows of text data from a local file, a Hugging Face hub data set or a built-in corpus.

A data source string is one of:

- a local ``.json``, ``.jsonl``, ``.parquet``, ``.csv`` or ``.tsv`` file;
- ``builtin:NAME``: a corpus the suite generates itself (see :mod:`datamodules.builtin_corpora`);
- a hub data set id, optionally with a configuration: ``"openai/gsm8k"`` or ``"openai/gsm8k:main"``.
"""

from __future__ import annotations

import json
from pathlib import Path

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv")
BUILTIN_PREFIX = "builtin:"


def load_rows(source: str, split: str = "train") -> list[dict]:
    """Load all rows of a data source as a list of dicts.

    Args:
        source: A local file, ``builtin:NAME`` or a hub data set id (see the module docstring).
        split: Split of a hub data set; ignored for local files and built-in corpora.

    Raises:
        FileNotFoundError: If a local path does not exist.
        ValueError: If a local file has an unsupported suffix or a built-in name is unknown.
    """
    if source.startswith(BUILTIN_PREFIX):
        from datamodules.builtin_corpora import generate_corpus

        return generate_corpus(source[len(BUILTIN_PREFIX):])
    path = Path(source).expanduser()
    looks_local = path.suffix in LOCAL_SUFFIXES or source.startswith((".", "/", "~"))
    if looks_local:
        if not path.is_file():
            raise FileNotFoundError(
                f"data file not found: {path}. Pass an existing file, a hub data set id, or a "
                f"built-in corpus such as 'builtin:arithmetic'."
            )
        return _read_local(path)
    return _read_hub(source, split)


def read_jsonl(path: Path) -> list[dict]:
    """Read one JSON object per line; blank lines are skipped.

    Raises:
        ValueError: If a line is not valid JSON; the message names the file and line.
    """
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid JSON line ({error.msg}).") from error
    return rows


def _read_local(path: Path) -> list[dict]:
    suffix = path.suffix
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of objects (or {{'data': [...]}}), got {type(data).__name__}.")
        return data
    import pandas as pd

    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", quoting=3 if suffix == ".tsv" else 0)
    else:
        raise ValueError(f"unsupported data file suffix {suffix!r} for {path}; use one of {LOCAL_SUFFIXES}.")
    return frame.to_dict(orient="records")


def _read_hub(source: str, split: str) -> list[dict]:
    import datasets

    name, _, config = source.partition(":")
    dataset = datasets.load_dataset(name, config or None, split=split)
    return [dict(row) for row in dataset]
