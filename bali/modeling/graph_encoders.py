"""Graph encoders over a batch's subgraphs (node vectors in, target vectors out).

- GATv2 (the reference's `GATv2Encoder`): `layers` x GATv2Conv (one linear shared by source and
  target, attention dropout), dropout + GELU between layers, then Linear -> LayerNorm (eps 1e-12)
  -> Dropout on the target nodes. `concat_heads`: `heads` heads of hidden / heads concatenated, as
  the reference; otherwise full-size heads averaged (twice the parameters at 2 heads).
  `self_loops`: GATv2's own self loops (the reference's `--gat_add_self_loops`). Without them a
  star's neighbours have no incoming edge, so after the first layer they hold only the layer's
  bias, and a stack of two or more layers gives every target the same vector whatever its input.
  The reference builds its convolutions with `edge_dim` but passes no edge attributes, so their
  edge projection is never used; it is not built here.
- GraphSAGE: the same stack with SAGEConv (its root weight adds the node itself).
Options the reference lacks, for small checkpoints and short runs: `residual` adds each target's
own input vector back after the stack, and `zero_init` starts the output LayerNorm's scale and
shift at zero, so a fresh encoder begins as the identity on the target's name vector.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATv2Conv, SAGEConv


class GraphEncoder(nn.Module):
    def __init__(self, kind: str, hidden: int, layers: int = 5, heads: int = 2, dropout: float = 0.1,
                 attention_dropout: float = 0.1, residual: bool = False, zero_init: bool = False,
                 concat_heads: bool = True, self_loops: bool = True):
        super().__init__()
        if kind == "gatv2":
            if concat_heads and hidden % heads:
                raise ValueError(f"concatenated heads: the hidden size {hidden} is not a multiple of {heads} heads")
            size = hidden // heads if concat_heads else hidden
            convs = [GATv2Conv(hidden, size, heads=heads, concat=concat_heads, dropout=attention_dropout,
                               share_weights=True, add_self_loops=self_loops) for _ in range(layers)]
        elif kind == "sage":
            convs = [SAGEConv(hidden, hidden) for _ in range(layers)]
        else:
            raise ValueError(f"graph encoder must be gatv2, sage, linear or identity, not {kind!r}")
        self.convs = nn.ModuleList(convs)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.GELU()
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=1e-12), nn.Dropout(dropout))
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
