"""PubMed and corpus files -> documents and sentences (the corpus stage), and the layout of its output."""
from __future__ import annotations

from pathlib import Path


def shard_names(corpus_dir: Path) -> list[str]:
    """The corpus stage's output shards, by name: every later stage reads and writes one shard at a time."""
    return sorted(f.stem for f in (Path(corpus_dir) / "sentences.parquet").glob("*.parquet"))
