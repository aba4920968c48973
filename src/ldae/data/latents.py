"""Cached latents by split (written once by ``ldae encode-latents``), for training and evaluation alike."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ldae.data.tables import TableError, write_tsv_atomic


@dataclass(frozen=True)
class LatentStore:
    """Latents of every session, written once: <dir>/latents.npy (N, C, D, H, W) float32 memory-mapped,
    <dir>/index.tsv (row -> session + split), <dir>/scale.json (scale factor = 1/std over TRAINING latents)."""

    root: Path

    @property
    def array_path(self) -> Path:
        return self.root / "latents.npy"

    @property
    def index_path(self) -> Path:
        return self.root / "index.tsv"

    @property
    def scale_path(self) -> Path:
        return self.root / "scale.json"

    @property
    def files(self) -> list[Path]:
        return [self.array_path, self.index_path, self.scale_path]

    def write(self, latents: np.ndarray, index: pd.DataFrame, scale_factor: float, meta: dict) -> None:
        """All three files or none: written in a temporary sibling folder, then renamed into place."""
        if len(latents) != len(index):
            raise ValueError(f"{len(latents)} latents for {len(index)} index rows")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", dir=self.root.parent))
        staged = LatentStore(tmp)
        np.save(staged.array_path, latents.astype(np.float32))
        write_tsv_atomic(index, staged.index_path)
        staged.scale_path.write_text(json.dumps({"scale_factor": scale_factor, **meta}, indent=2))
        if self.root.exists():
            for path in self.root.iterdir():
                path.unlink()
            self.root.rmdir()
        os.replace(tmp, self.root)

    def read(self) -> tuple[np.ndarray, pd.DataFrame, float]:
        for path in self.files:
            if not path.is_file():
                raise FileNotFoundError(f"latent store incomplete, {path} missing; rerun rule encode_latents")
        latents = np.load(self.array_path, mmap_mode="r")
        index = pd.read_csv(self.index_path, sep="\t", dtype={"participant_id": str, "session_id": str})
        return latents, index, self.scale_factor()

    def scale_factor(self) -> float:
        """The latent scale factor (1 / std over the training latents, or the configured constant)."""
        if not self.scale_path.is_file():
            raise FileNotFoundError(f"latent scale factor not found: {self.scale_path}; run rule encode_latents")
        return float(json.loads(self.scale_path.read_text())["scale_factor"])


class LatentDataset(torch.utils.data.Dataset):
    """Scaled latents of one split: items ``{"latent": scale * z, "row": row in the store}``."""

    def __init__(self, store: LatentStore, split: str):
        self.latents, index, self.scale = store.read()
        self.rows = index.index[index.split == split].to_numpy()
        self.index = index
        if len(self.rows) == 0:
            raise TableError(f"no latent of split {split!r} in {store.index_path}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict:
        row = self.rows[item]
        return {"latent": torch.from_numpy(np.array(self.latents[row])) * self.scale, "row": int(row)}
