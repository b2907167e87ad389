"""Alignment pre-training: the LM + graph encoder on the dataset stage's examples.

  python stages/pretrain.py DATASET_DIR OUT_DIR [-S pretrain.KEY=VALUE ...]
  torchrun --nproc_per_node 2 stages/pretrain.py DATASET_DIR OUT_DIR   # DDP (gloo on CPU, NCCL on GPU)

Under torchrun each process trains on the GPU of its LOCAL_RANK (`pretrain.device: auto`).

Writes OUT_DIR (under models/): the LM in HF format with its tokenizer (AutoModel /
AutoTokenizer load it), graph_encoder.safetensors, params.json and a model card (README.md); both
record `numeric_precision`, what `pretrain.precision` resolved to on this hardware (`bali.precision`).
Checkpoints go to `pretrain.checkpoint_dir` (kept outside DVC's outputs; the newest
`keep_checkpoints`, each verified on load): an interrupted run started again with the same params
and data resumes from its last good checkpoint, says so on stderr and in dvclive's
`resumed_from_step`; a finished run removes them. Losses (train, and validation every `eval_every`
steps), learning rates and throughput are logged with dvclive to dvclive/pretrain against the
optimiser step; a resumed run writes that record afresh from its checkpoint, so each step appears
once. A write that fails (a full disk) ends the stage with a one-line error and no partial file.
"""
import json
import os
import sys
from pathlib import Path


import numpy as np
import torch

from bali import params, precision
from bali.training import checkpoints
from bali.hf import resolve_model_path, save_tokenizer
from bali.io import atomic_outputs
from bali.training.loop import contrastive_sentences, pick_device, train


def encoder_share_note(p: dict, train: dict) -> str:
    """The model card's sentence on how much of the graph vector the encoder made at the last step."""
    if p["graph_encoder"] == "linear":
        return "The graph vector is the [CLS] vector of the subgraph as text (no name vector to compare with)."
    if p["graph_encoder"] == "identity":
        return "No graph encoder: the graph vector is the target's own name vector (the ablation of the encoder)."
    if "encoder_share" not in train:
        return ""
    return (f"Graph encoder's share at the last step: mean ||graph vector - target's name vector|| / ||name vector|| = "
            f"{train['encoder_share']:.1%}, mean cosine between them {train['graph_name_cosine']:.3f}"
            + (" (with `residual`, the share is the encoder's output against the name it is added to)." if p["residual"]
               else " (no residual: the graph vector is the encoder's output alone; cosine says how far it turned away "
                    "from the name)."))


def model_card(p: dict, dataset_dir: Path, metrics: dict, world_size: int = 1, numerics: str = "float32") -> str:
    stats = json.loads((dataset_dir / "stats.json").read_text())
    negatives = contrastive_sentences(p, world_size)
    # the link term is never gathered (bali.modeling.model.BaliModel.link_loss)
    per_rank_link = ("; the link term saw only each process's own pairs and negatives"
                     if world_size > 1 and p["link_weight"] else "")
    share = encoder_share_note(p, metrics.get("train", {}))
    return (f"# BALI-aligned {p['model']}\n\nBase model: `{p['model']}`. Aligned with a UMLS-derived knowledge graph by "
            f"BALI pre-training (bali pipeline, `stages/pretrain.py`).\n\n" + (f"{share}\n\n" if share else "")
            + f"## Data\n\n"
            f"{stats['examples']['train']:,} training sentences, {stats['mentions_kept']:,} concept mentions, a graph "
            f"of {stats['graph_nodes']:,} nodes and {stats['graph_edges']:,} edges (`{dataset_dir}`).\n\n"
            f"Trained on {world_size} process{'es' if world_size > 1 else ''}; each contrastive loss saw the vectors of "
            f"{'' if negatives == p['batch_size'] else 'about '}{negatives} sentences of each micro-batch of "
            f"{p['batch_size']} (`gather_negatives: {str(p['gather_negatives']).lower()}`)"
            f"{per_rank_link}.\n\nForward passes in "
            f"{'bf16 autocast (losses and optimiser state in float32)' if numerics == 'bf16' else 'float32'} "
            f"(`precision: {p['precision']}`).\n\n"
            f"## Params\n\n```json\n{json.dumps(p, indent=2, sort_keys=True)}\n```\n\n## Final metrics\n\n"
            f"```json\n{json.dumps(metrics, indent=2, sort_keys=True)}\n```\n\nLoad: `AutoModel.from_pretrained(path)`.\n")


def dev_curves(el_dir: Path, hierarchy_dir: Path | None, tokenizer_dir: Path, numerics: str = "auto"):
    """acc@1 / acc@5 of the LM on an entity-linking task and, with a hierarchy task, parent hit@10 of
    its dev links (the evaluate stage's default protocols), for curves against training steps."""
    from transformers import AutoTokenizer

    from bali.evaluation import entity_linking as el
    from bali.lm.encoder import embed, top_k
    from bali.evaluation.hierarchy import parent_ranks

    # dev halves only: a curve watched while choosing settings must not see test items
    queries = el_dir / "dev.txt" if (el_dir / "dev.txt").exists() else el_dir / "queries.txt"
    (q_cuis, q_texts), (d_cuis, d_texts) = (el.read_pairs(f) for f in (queries, el_dir / "dictionary.txt"))
    if hierarchy_dir is not None:
        h_cuis, h_names = el.read_pairs(hierarchy_dir / "names.txt")
        row = {c: i for i, c in enumerate(h_cuis)}
        links = [(row[c], row[p]) for c, p in zip(*el.read_pairs(hierarchy_dir / "held_out_dev.txt"))
                 if c in row and p in row]
        child, parent = (np.array(x, dtype=np.int64) for x in zip(*links))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)

    def evaluate(lm) -> dict:
        device = str(next(lm.parameters()).device)
        names, queries = (embed(lm, tok, texts, device=device, precision=numerics) for texts in (d_texts, q_texts))
        hit = el.hits(q_cuis, d_cuis, top_k(queries, names, 5, device=device)[1])
        figures = {f"el/{k}": v for k, v in el.accuracy_at(hit, (1, 5)).items()}
        if hierarchy_dir is not None:
            ranks = parent_ranks(embed(lm, tok, h_names, device=device, precision=numerics).cpu(), child, parent)
            figures["hierarchy/hit@10"] = float((ranks <= 10).mean())
        return figures

    return evaluate


def main(argv=None):
    ap = params.stage_parser(__doc__, ("dataset_dir", "dataset output"), ("out_dir", "model folder"))
    args = ap.parse_args(argv)
    p = params.load("pretrain", args.overrides, args.params)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(p)  # under torchrun: the GPU of LOCAL_RANK
    numerics = precision.resolve(p["precision"], device)  # as `train` resolves it: recorded with the model
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dataset_dir, run_dir = Path(args.dataset_dir), Path(p["checkpoint_dir"])
    live = None
    if rank == 0:
        from dvclive import Live
        # dvcyaml=None: dvc.yaml declares the plots itself; dvclive must not rewrite it. Always a fresh
        # record: a resumed run replays its checkpoint's points (what the killed run logged past them is dropped).
        live = Live(p["dvclive_dir"], resume=False, save_dvc_exp=False, dvcyaml=None)
    evaluate = dev_curves(Path(p["eval_task"]), Path(p["eval_hierarchy"]) if p["eval_hierarchy"] else None,
                          dataset_dir / "tokenizer", numerics) if p["eval_every"] and rank == 0 else None
    model = train(dataset_dir, run_dir, p, resolve_model_path(p["model"]), rank, world, live=live, evaluate=evaluate)
    if rank == 0:
        from safetensors.torch import save_file
        from transformers import AutoTokenizer

        # losses only: throughput would make the model card (and the output hash) differ run to run
        metrics = {k: v for k, v in (live.summary or {}).items() if k in ("train", "val", "el")}
        live.end()
        with atomic_outputs(args.out_dir) as tmp:
            model.lm.save_pretrained(tmp)
            save_tokenizer(AutoTokenizer.from_pretrained(dataset_dir / "tokenizer"), tmp)
            if model.graph is not None:
                # every key, shared GATv2 weights copied: save_model keeps one name of a shared tensor, picked
                # through a set (it changes with the hash seed, and so would the file)
                state = {k: v.detach().contiguous().clone() for k, v in sorted(model.graph.state_dict().items())}
                save_file(state, str(tmp / "graph_encoder.safetensors"))
            params.save_resolved({**p, "numeric_precision": numerics}, tmp, dataset_dir=str(dataset_dir))
            (tmp / "README.md").write_text(model_card(p, dataset_dir, metrics, world, numerics))
        checkpoints.remove_all(run_dir)  # finished: the next run starts afresh
        print(f"pretrain: {p['model']} aligned -> {args.out_dir}")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except OSError as e:  # a full disk or a file-size limit: one line; the writes are atomic, nothing is half-written
        sys.exit(f"pretrain: error: {e}")
