"""The alignment model: one shared LM for sentences (MLM + mention vectors, one forward pass) and
for node names, a graph encoder over each batch's subgraphs, and the alignment loss.

Mention vector: mean of last-layer subword vectors over every token of every mention of a concept
in a sentence. Node vector: its sampled name through the same LM (gradients flow), mean-pooled.
Graph vector: the graph encoder's output on the target node, or, for the "linear graph" variant,
the [CLS] vector of the subgraph written as text, or, for `identity` (the ablation without a graph
encoder), the target's own name vector.

Loss terms (each with its weight): MLM; `contrastive` mention <-> graph vector (the method);
`name` mention <-> the target's sampled name, with the other targets' names (or, `name_negatives:
subgraph`, every name of the stars: the sampled neighbours become hard negatives); `synonym` graph
vector <-> a second name of the target, encoded alone, which trains the name space that zero-shot
entity linking ranks in; `link` (link prediction, as DRAGON's node-level objective) for each sampled
neighbour n of a target t, the vector of t's star without n (`link_anchor: graph`) or t's own name
vector (`name`: the graph without the encoder) <-> n's name, against the batch's other node names
(t and its graph neighbours excluded): the LM learns that linked concepts are near, which the
mention terms never ask. The checkpoint's own MLM head is used when it
has one; `fresh_mlm_head` replaces it with a fresh one whose decoder is not tied to the input
embeddings, as the reference's own `BertLMPredictionHead` (the optimiser trains it at `other_lr`).
Every loss is computed in float32 (bf16 autocast covers the LM and the graph encoder only).

Beside the losses the forward pass reports how far the graph vector is from the target's own name
vector (not optimised, no gradient): `encoder_share`, mean ||graph - name|| / ||name|| (with
`residual`, the encoder's output against the name it is added to; 0 for `identity`), and
`graph_name_cosine`, their mean cosine (the losses are cosine-based, so this is the part they see),
and, as `vectors`, the batch's (mention vectors, graph vectors, concept ids), detached.

With every graph term's weight 0 (continued MLM alone, the control beside BALI's objective) the node
names, the graph encoder and the alignment losses are not computed at all: they would be multiplied
by 0, so the LM's update is the same, and they are most of a step. Their figures are then NaN
(the mention vectors are still reported: they come from the sentences' own forward pass).
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from bali.modeling.graph_encoders import GraphEncoder
from bali.modeling.losses import link_nt_xent, multi_similarity, nt_xent


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order (sizes may differ); gradients flow back to each rank's own."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(sizes))
    parts = all_gather(torch.cat([x, x.new_zeros(longest - len(x), *x.shape[1:])]))
    return torch.cat([part[:int(size)] for part, size in zip(parts, sizes)])


def first_rows(labels: torch.Tensor) -> torch.Tensor:
    """Indices of the first row of each distinct label, in row order."""
    _, inverse = torch.unique(labels, return_inverse=True)
    rows = torch.arange(len(labels), device=labels.device)
    first = torch.full((int(inverse.max()) + 1,), len(labels), device=labels.device).scatter_reduce(
        0, inverse, rows, reduce="amin")
    return first.sort().values


def load_masked_lm(lm_path: str):
    """The checkpoint as a masked LM, and whether its MLM head was missing (MiniLM and other
    sentence encoders ship none). transformers' own report of the missing head (a table and "this
    checkpoint seem corrupted") is silenced: the missing head is expected, and `head_note` says
    what happens to it. Any missing weight of the encoder itself is an error."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(lm_path, output_loading_info=True)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    prefix = model.base_model_prefix
    missing_encoder = [k for k in info["missing_keys"] if k.startswith(prefix)]
    if missing_encoder:
        raise ValueError(f"{lm_path}: the checkpoint lacks encoder weights {missing_encoder[:5]}")
    return model, bool(info["missing_keys"])


def head_note(missing: bool, fresh: bool, mlm_weight: float) -> str:
    if not mlm_weight:
        return ("the MLM loss is off (mlm_weight: 0), so its head is unused and frozen"
                + (" (the checkpoint has none; transformers initialised one at random)" if missing else ""))
    if fresh:
        return (("the checkpoint has no MLM head; " if missing else "")
                + "a fresh MLM head, its decoder untied from the embeddings, is trained at other_lr (as published)")
    if missing:
        return "the checkpoint has no MLM head; a fresh one is initialised at random and trained (decoder tied)"
    return "the checkpoint's own MLM head is trained"


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor, local_count: torch.Tensor) -> torch.Tensor:
    """MLM cross-entropy summed over this rank's masked tokens (logits of those tokens only), in
    float32, divided by the global batch's masked-token count times the world size: once DDP
    averages the ranks' gradients this is the global batch's mean, and a rank (or a whole batch)
    without a masked token contributes 0 instead of HF's NaN."""
    total = F.cross_entropy(logits.float(), labels, reduction="sum")
    world = world_size()
    count = local_count.clone()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(count)
    return total * world / count.clamp(min=1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).float()
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)  # summed in float32 under bf16 autocast


def graph_name_figures(graph: torch.Tensor, names: torch.Tensor | None) -> dict:
    """Mean ||graph - name|| / ||name|| and mean cosine(graph, name) over the targets (NaN without name vectors)."""
    if names is None:
        nan = graph.new_full((), float("nan"), dtype=torch.float32)
        return {"encoder_share": nan, "graph_name_cosine": nan}
    g, n = graph.detach().float(), names.detach().float()
    return {"encoder_share": ((g - n).norm(dim=-1) / n.norm(dim=-1).clamp(min=1e-12)).mean(),
            "graph_name_cosine": F.cosine_similarity(g, n, dim=-1).mean()}


class BaliModel(nn.Module):
    def __init__(self, lm_path: str, graph_encoder: str = "gatv2", layers: int = 5, heads: int = 2,
                 dropout: float = 0.1, attention_dropout: float = 0.1, residual: bool = False, zero_init: bool = False,
                 concat_heads: bool = True, gat_self_loops: bool = True, fresh_mlm_head: bool = False,
                 loss: str = "nt_xent", temperature: float = 0.07,
                 mlm_weight: float = 1.0, contrastive_weight: float = 1.0, name_weight: float = 0.0,
                 name_negatives: str = "targets", synonym_weight: float = 0.0, link_weight: float = 0.0,
                 link_anchor: str = "graph", link_temperature: float = 0.07, gather_negatives: bool = True,
                 verbose: bool = False):
        super().__init__()
        self.mlm_model, self.head_was_missing = load_masked_lm(lm_path)
        prefix = self.mlm_model.base_model_prefix
        if fresh_mlm_head:
            self._fresh_untied_head(prefix)
        head_modules = [name for name, _ in self.mlm_model.named_children() if name != prefix]
        # one head module applied to the masked positions only (BERT's `cls`, RoBERTa's `lm_head`):
        # the logits of every position would be batch x length x vocabulary
        self.head_name = head_modules[0] if len(head_modules) == 1 else None
        if not mlm_weight:  # an unused head would make DDP wait for gradients that never come
            tied = self.mlm_model.get_input_embeddings().weight
            for name, q in self.mlm_model.named_parameters():
                if not name.startswith(prefix) and q is not tied:
                    q.requires_grad_(False)
        if verbose:
            print(f"pretrain: {lm_path}: " + head_note(self.head_was_missing, fresh_mlm_head, mlm_weight), file=sys.stderr)
        hidden = self.mlm_model.config.hidden_size
        self.linear_graph, self.identity_graph = graph_encoder == "linear", graph_encoder == "identity"
        self.graph = None if self.linear_graph or self.identity_graph else GraphEncoder(
            graph_encoder, hidden, layers, heads, dropout, attention_dropout, residual, zero_init, concat_heads,
            gat_self_loops)
        self.loss_kind, self.temperature, self.gather = loss, temperature, gather_negatives
        self.weights = {"mlm": mlm_weight, "contrastive": contrastive_weight, "name": name_weight,
                        "synonym": synonym_weight, "link": link_weight}
        self.uses_graph = any(self.weights[k] > 0 for k in ("contrastive", "name", "synonym", "link"))
        if not self.uses_graph and self.graph is not None:  # never reached: DDP must not wait for its gradients
            self.graph.requires_grad_(False)
        if (synonym_weight or link_weight) and self.linear_graph:
            raise ValueError("the synonym and link terms need a graph encoder (gatv2 or sage), not the linear graph")
        if link_anchor not in ("graph", "name"):
            raise ValueError(f"link_anchor must be graph or name, not {link_anchor!r}")
        self.link_anchor, self.link_temperature = link_anchor, link_temperature
        if name_negatives not in ("targets", "subgraph"):
            raise ValueError(f"name_negatives must be targets or subgraph, not {name_negatives!r}")
        self.name_negatives = name_negatives

    @property
    def lm(self):
        return self.mlm_model.base_model

    def _fresh_untied_head(self, prefix: str) -> None:
        """Every head module re-initialised, the decoder a new matrix of its own (not the input embeddings)."""
        decoder = self.mlm_model.get_output_embeddings()
        if decoder is None:
            raise ValueError(f"{type(self.mlm_model).__name__} has no output embeddings to replace with a fresh head")
        self.mlm_model.set_output_embeddings(nn.Linear(decoder.in_features, decoder.out_features,
                                                       bias=decoder.bias is not None))
        # config.tie_word_embeddings stays as it was: the saved LM's config is the base model's
        tied = self.mlm_model.get_input_embeddings().weight
        for name, module in self.mlm_model.named_modules():
            if name and not name.startswith(prefix) and hasattr(module, "reset_parameters") \
                    and getattr(module, "weight", None) is not tied:
                module.reset_parameters()

    def align_loss(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                   b_labels: torch.Tensor | None = None) -> torch.Tensor:
        """NT-Xent (or multi-similarity) over [a; b], every same-concept pair a positive. Under DDP
        with `gather_negatives`, over every rank's vectors: each rank computes the loss of the global
        batch, and DDP's gradient averaging then gives the single-process gradient."""
        distinct_b = b_labels is not None  # one row per node (the subgraph's names)
        b_labels = labels if b_labels is None else b_labels
        if self.gather and world_size() > 1:
            a, b, labels, b_labels = gather_rows(a), gather_rows(b), gather_rows(labels), gather_rows(b_labels)
            if distinct_b:  # a node sampled on two ranks is one node, as in a single process
                first = first_rows(b_labels)
                b, b_labels = b[first], b_labels[first]
        x, y = torch.cat([a, b]), torch.cat([labels, b_labels])
        if self.loss_kind == "multi_similarity":
            return multi_similarity(x, y)
        return nt_xent(x, y, self.temperature)

    def node_vectors(self, batch: dict) -> torch.Tensor:
        chunks, out, start = batch["name_chunks"], None, 0
        # one word-embedding lookup for every chunk: its backward builds one dense vocabulary-sized
        # gradient instead of one per chunk (zero-filled and summed each time: a fifth of a CPU step)
        words = self.lm.get_input_embeddings()(torch.cat([c["input_ids"].reshape(-1) for c in chunks]))
        for chunk in chunks:
            n = chunk["input_ids"].numel()
            embeds, start = words[start:start + n].view(*chunk["input_ids"].shape, -1), start + n
            h = mean_pool(self.lm(inputs_embeds=embeds, attention_mask=chunk["attention_mask"]).last_hidden_state,
                          chunk["attention_mask"])
            if out is None:
                out = h.new_zeros(batch.get("name_rows", len(batch["graph_nodes"])), h.shape[-1])
            out = out.index_copy(0, chunk["nodes"], h)
        return out

    def link_loss(self, batch: dict, nodes: torch.Tensor) -> torch.Tensor:
        """Each rank's own pairs and negatives (not gathered under DDP: a rank's mean, then DDP's)."""
        if not len(batch["link_positive"]):  # no target has a sampled neighbour
            return nodes.float().sum() * 0.0
        if self.link_anchor == "graph" and self.graph is not None:
            anchors = self.graph(nodes[batch["link_star_nodes"]], batch["link_edge_index"], batch["link_centers"])
        else:
            anchors = nodes[batch["link_anchor"]]
        return link_nt_xent(anchors, nodes, batch["link_positive"], batch["link_negative"], self.link_temperature)

    def forward(self, batch: dict) -> dict:
        use_mlm = self.weights["mlm"] > 0
        if use_mlm:
            labels = batch["mlm_labels"]
            masked = labels != -100
            if self.head_name is not None:
                hidden = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                logits = getattr(self.mlm_model, self.head_name)(hidden[masked])
            else:
                out = self.mlm_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     output_hidden_states=True)
                hidden, logits = out.hidden_states[-1], out.logits[masked]
            mlm = masked_token_loss(logits, labels[masked], masked.sum())
        else:
            hidden = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mlm = hidden.new_zeros((), dtype=torch.float32)
        labels = batch["target_nodes"]
        losses = {"mlm": mlm}
        n_targets = len(batch["target_nodes"])
        tokens = hidden[batch["mention_rows"], batch["mention_positions"]].float()  # pooled in float32
        sums = tokens.new_zeros(n_targets, hidden.shape[-1]).index_add(0, batch["mention_owner"], tokens)
        # counted with index_add, not bincount: bincount waits for the device to learn its output size
        counts = tokens.new_zeros(n_targets).index_add(0, batch["mention_owner"], tokens.new_ones(len(tokens)))
        counts = counts.clamp(min=1).unsqueeze(1)
        mentions = sums / counts
        if not self.uses_graph:
            zero = hidden.new_zeros((), dtype=torch.float32)
            losses.update({k: zero for k in ("contrastive", "name", "synonym", "link")})
            losses["loss"] = self.weights["mlm"] * mlm
            nan = hidden.new_full((), float("nan"), dtype=torch.float32)
            losses.update({"encoder_share": nan, "graph_name_cosine": nan, "vectors": (mentions.detach(), None, labels)})
            return losses
        if self.linear_graph:
            cls = self.lm(input_ids=batch["graph_input_ids"], attention_mask=batch["graph_attention_mask"]).last_hidden_state[:, 0]
            graph = cls[batch["target_node_index"]]
            names = None
        else:
            vectors = self.node_vectors(batch)  # the nodes' names, then masked target names and second names
            nodes = vectors[:len(batch["graph_nodes"])]
            names = nodes[batch["target_node_index"]]
            graph = names if self.identity_graph else \
                self.graph(vectors[batch["star_nodes"]], batch["edge_index"], batch["target_star_index"])
        losses["contrastive"] = self.align_loss(mentions, graph, labels)
        if names is None or self.weights["name"] == 0:
            losses["name"] = hidden.new_zeros((), dtype=torch.float32)
        elif self.name_negatives == "subgraph":  # every node name of the stars: neighbours are hard negatives
            losses["name"] = self.align_loss(mentions, nodes, labels, batch["graph_nodes"].to(labels.device, torch.long))
        else:
            losses["name"] = self.align_loss(mentions, names, labels)
        # graph vector <-> another name of the same concept, encoded alone (GEBERT's node-name alignment)
        losses["synonym"] = self.align_loss(graph, vectors[batch["target_synonym_index"]], labels) \
            if self.weights["synonym"] > 0 else hidden.new_zeros((), dtype=torch.float32)
        losses["link"] = self.link_loss(batch, nodes) if self.weights["link"] > 0 \
            else hidden.new_zeros((), dtype=torch.float32)
        losses["loss"] = sum(self.weights[k] * losses[k] for k in self.weights)
        losses.update(graph_name_figures(graph, names))
        # for the collapse diagnostics (bali.training.diagnostics), not optimised
        losses["vectors"] = (mentions.detach(), graph.detach(), labels)
        return losses
