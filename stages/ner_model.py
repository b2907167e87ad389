"""The concept tagger of `link.method: ner`, fine-tuned from the base LM.

  python stages/ner_model.py GRAPH_DIR CORPUS_DIR BASE_MODEL OUT_DIR [-S ner_model.KEY=VALUE -S link.KEY=VALUE ...]

Trained on gold files (`ner_model.train`: a folder with train and dev files, PubTator or CoNLL BIO)
or, by default, by distant supervision from the graph: the corpus's sentences tagged where the
dictionary finds a name of a concept of `link.semantic_types`, sentences without a match, and the
graph's names (bali/linking/ner_training.py). Writes OUT_DIR: the tagger in HF format
(AutoModelForTokenClassification) with its tokenizer, stats.json (training data and the dev split's
entity-level P/R/F1) and params.json. When `link.method` is not `ner` nothing is trained: OUT_DIR
holds only a note and params.json, so the default pipeline pays nothing for this stage.
"""
import time
from pathlib import Path

import torch

from bali import params
from bali.hf import save_tokenizer
from bali.io import atomic_outputs, write_json
from bali.linking.ner_training import fine_tune, gold, silver

# What the tagger reads of the link section: whether it is needed, and the dictionary that labels its
# silver examples (dvc.yaml's params list these keys; a test keeps the two together).
BORROWED = {"link": ("method", "semantic_types", "min_name_length", "max_name_tokens", "stopwords", "exclude_names")}


def main(argv=None):
    ap = params.stage_parser(__doc__, ("graph_dir", "umls_graph output"), ("corpus_dir", "corpus output"),
                             ("base_model", "the LM to fine-tune"), ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("ner_model", args.overrides, args.params, borrow=BORROWED)
    link_p = p["link"]
    with atomic_outputs(args.out_dir) as tmp:
        params.save_resolved(p, tmp, graph_dir=args.graph_dir, corpus_dir=args.corpus_dir, base_model=args.base_model)
        if link_p["method"] != "ner":
            (tmp / "README.md").write_text(f"No tagger: link.method is {link_p['method']!r}; "
                                           "`-S link.method=ner` trains one here.\n")
            print(f"ner_model: not needed (link.method {link_p['method']}) -> {args.out_dir}")
            return
        t0 = time.perf_counter()
        seed = p["base"]["seed"]
        if p["train"]:
            data, stats = gold(Path(p["train"]), p)
        else:
            data, stats = silver(Path(args.graph_dir), Path(args.corpus_dir), link_p, p, seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tok, dev = fine_tune(args.base_model, data, p, seed, device)
        model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        write_json(tmp / "stats.json", {**stats, "dev": dev, "seconds": time.perf_counter() - t0})
    print(f"ner_model: {stats['train_examples']:,} training examples ({stats['source']}); dev entity F1 "
          f"{dev.get('f1', float('nan')):.3f} -> {args.out_dir}")


if __name__ == "__main__":
    main()
