"""Graph encoders over a batch's subgraphs (node vectors in, target vectors out).

- GATv2 as published: `layers` x GATv2Conv (`heads` heads averaged, one linear shared by source and
  target, attention dropout), dropout + GELU between layers, then Linear -> LayerNorm -> Dropout on
  the target nodes.
- GraphSAGE: the same stack with SAGEConv.
Options the published recipe lacks, for small checkpoints and short runs: `residual` adds each
target's own input vector back after the stack, and `zero_init` starts the output LayerNorm's
scale and shift at zero, so a fresh encoder begins as the identity on the target's name vector.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATv2Conv, SAGEConv


class GraphEncoder(nn.Module):
    def __init__(self, kind: str, hidden: int, layers: int = 5, heads: int = 2, dropout: float = 0.1,
                 attention_dropout: float = 0.1, residual: bool = False, zero_init: bool = False):
        super().__init__()
        if kind == "gatv2":
            convs = [GATv2Conv(hidden, hidden, heads=heads, concat=False, dropout=attention_dropout, share_weights=True,
                               add_self_loops=True) for _ in range(layers)]
        elif kind == "sage":
            convs = [SAGEConv(hidden, hidden) for _ in range(layers)]
        else:
            raise ValueError(f"graph encoder must be gatv2 or sage, not {kind!r}")
        self.convs = nn.ModuleList(convs)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.GELU()
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.Dropout(dropout))
        self.residual = residual
        if zero_init:  # the LayerNorm's scale and shift, not the Linear: LayerNorm of zeros is ill-conditioned
            nn.init.zeros_(self.out[1].weight)
            nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = self.act(self.dropout(h))
        out = self.out(h[targets])
        return out + x[targets] if self.residual else out
