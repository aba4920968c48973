"""THE atomic writer: every file a verb writes goes through :func:`atomic_output` (text, JSON, TSV here; torch files,
figures and arrays by the caller's writer on the temporary path), so readers never see half a file and a failed
write leaves nothing behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["temp_name", "atomic_output", "write_text", "write_json", "write_tsv"]


def temp_name(path: str | os.PathLike) -> str:
    """Where ``path`` is written before it is renamed into place: same folder (so the rename is atomic), same
    extension (``x.nii.gz`` -> ``.x.tmp-<pid>.nii.gz``; writers pick the format from it)."""
    folder, name = os.path.split(os.fspath(path))
    for ext in (".nii.gz", ".nii", ".json", ".png", ".mat", ".h5", ".tsv", ".npz", ".pt", ".csv", ".md", ".yaml"):
        if name.endswith(ext):
            return os.path.join(folder, f".{name[: -len(ext)]}.tmp-{os.getpid()}{ext}")
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary sibling of ``path`` to write; renamed onto ``path`` on success, removed on error."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: Any, trailing_newline: bool = False) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + ("\n" if trailing_newline else ""))


def write_tsv(frame, path: str | os.PathLike, **to_csv) -> None:
    """A pandas table as TSV (``na_rep`` 'n/a' unless given)."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, **{"na_rep": "n/a", **to_csv})
