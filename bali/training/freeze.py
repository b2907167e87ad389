"""`pretrain.lm_freeze_steps`: the LM held still for the first K optimiser steps while the parts that
start from random (a fresh MLM head, the graph encoder) learn, so their first, largest gradients
do not reach the pre-trained weights through the alignment and MLM terms.

How: during those steps the LM's gradients are dropped before the optimiser step (set to None),
so AdamW neither moves nor decays the LM's weights and keeps no moments for them; the LM group's
learning rate is 0 then (the logged `lr/lm` shows the freeze). From step K on the LM trains with
fresh AdamW moments, its learning rate warming up again over the run's warm-up steps (at full rate,
bias-corrected Adam's first steps would move every LM weight by about the learning rate at once).
The optimiser state and the schedule are functions of the step alone, so a checkpoint taken during
or after the freeze resumes exactly. Gradients still flow through the LM during the freeze (the
graph encoder's node vectors come from it); only its own update is withheld.
"""
from __future__ import annotations

from collections.abc import Callable


def frozen_steps(p: dict) -> int:
    return int(p.get("lm_freeze_steps", 0) or 0)


def lm_factor(factor: Callable[[int], float], p: dict, warmup: int) -> Callable[[int], float]:
    """The LM group's learning-rate factor: the run's `factor`, 0 during the freeze and warmed up
    again after it (unchanged without a freeze)."""
    k = frozen_steps(p)
    if not k:
        return factor

    def thawed(step: int) -> float:
        if step < k:
            return 0.0
        return factor(step) * min(1.0, (step - k + 1) / max(1, warmup))
    return thawed


def hold_lm(model, steps_done: int, p: dict) -> None:
    """Before optimiser step `steps_done + 1`: drop the LM's gradients while it is frozen."""
    if steps_done < frozen_steps(p):
        for q in model.lm.parameters():
            q.grad = None
