"""The `pretrain` params section as one typed config, passed whole.

Every key of the section is a field here, so a key the code does not know, or one the params file
lacks, fails at start rather than deep in a run. Two marks on the fields say where a value goes:
`model` fields are the arguments `BaliModel` is built from (by name, never copied by hand), and
`resume=False` fields change where and how fast a run goes or what it logs, not what it trains, so a
checkpoint made under other values of them is still resumed; every other field is part of the run
key a checkpoint must match.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


def model():
    return field(metadata={"model": True})


def not_resumed():
    return field(metadata={"resume": False})


@dataclass(frozen=True)
class PretrainConfig:
    base_seed: int                  # the pipeline's base.seed (the default of `seed`)
    model: str
    seed: int | None
    graph_encoder: str = model()
    layers: int = model()
    heads: int = model()
    concat_heads: bool = model()
    gat_self_loops: bool = model()
    dropout: float = model()
    attention_dropout: float = model()
    residual: bool = model()
    zero_init: bool = model()
    neighbors: int
    sample_per: str
    mlm_probability: float
    mention_masking_prob: float
    concept_name_masking_prob: float
    loss: str = model()
    temperature: float = model()
    mlm_weight: float = model()
    fresh_mlm_head: bool = model()
    contrastive_weight: float = model()
    name_weight: float = model()
    synonym_weight: float = model()
    link_weight: float = model()
    link_anchor: str = model()
    link_temperature: float = model()
    name_negatives: str = model()
    gather_negatives: bool = model()
    lm_lr: float
    other_lr: float
    lm_freeze_steps: int
    weight_decay: float
    warmup_fraction: float
    warmup_max_steps: int
    batch_size: int
    grad_accum: int
    max_grad_norm: float
    epochs: int
    max_steps: int
    precision: str                  # the run key holds the resolved precision (a bf16 checkpoint is not float32's)
    workers: int = not_resumed()
    checkpoint_every: int = not_resumed()
    keep_checkpoints: int = not_resumed()
    checkpoint_dir: str = not_resumed()
    dvclive_dir: str = not_resumed()
    eval_every: int = not_resumed()
    eval_task: str = not_resumed()
    eval_hierarchy: str = not_resumed()
    diagnostics_every: int = not_resumed()
    val_batches: int = not_resumed()
    device: str = not_resumed()
    tf32: bool = not_resumed()
    fused_adamw: bool = not_resumed()
    compile: bool = not_resumed()
    pin_memory: bool = not_resumed()

    @classmethod
    def of(cls, p: dict) -> "PretrainConfig":
        """The config of a loaded `pretrain` section ({'base': ..., **section}, as params.load gives it)."""
        section = {k: v for k, v in p.items() if k != "base"}
        names = {f.name for f in fields(cls)} - {"base_seed"}
        unknown, missing = sorted(section.keys() - names), sorted(names - section.keys())
        if unknown or missing:
            raise KeyError(f"pretrain params: unknown {unknown}, missing {missing}")
        return cls(base_seed=p["base"]["seed"], **section)

    def model_args(self) -> dict:
        """`BaliModel`'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("model")}

    def resumed_by(self) -> dict:
        """The params a checkpoint must match to be resumed."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("resume", True)}

    @property
    def training_seed(self) -> int:
        """Initialisation, batch order, draws, masks: `seed`, or the pipeline's `base.seed` when null."""
        return self.base_seed if self.seed is None else int(self.seed)
