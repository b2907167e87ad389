"""The report: base vs aligned per task, training curves, the ablation table.

  python stages/report.py EVAL_DIR LIVE_DIR OUT_DIR [-S report.KEY=VALUE ...]

Reads EVAL_DIR/<model>/<task>/{results.json,predictions.parquet} (the evaluate stage), LIVE_DIR
(dvclive's pre-training logs), `report.ablations` (a CSV written by `make ablations`) and the data
stages' stats.json (`report.stage_stats`). Writes OUT_DIR/report.md with its figures
(OUT_DIR/figures/*.png), OUT_DIR/runs.md (each data stage's wall time and peak RSS), OUT_DIR/compare.json (every figure,
interval and paired test in the report), OUT_DIR/summary.json (each task's paired gain: the DVC
metric) and OUT_DIR/params.json.
"""
from pathlib import Path


from bali import params
from bali.reporting import pages, report
from bali.io import atomic_outputs, write_json


def main(argv=None):
    ap = params.stage_parser(__doc__, ("eval_dir", "evaluate outputs"), ("live_dir", "dvclive folder of pretrain"),
                             ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("report", args.overrides, args.params)
    eval_dir, live_dir = Path(args.eval_dir), Path(args.live_dir)
    rows = report.comparison(eval_dir, p["base_model"], p["base"]["seed"])
    if not rows:
        raise SystemExit(f"report: no results.json under {eval_dir}/<model>/<task>/")
    ablations = report.read_ablations(Path(p["ablations"])) if p["ablations"] and Path(p["ablations"]).exists() else []
    with atomic_outputs(args.out_dir) as tmp:
        (tmp / "figures").mkdir()
        figures = {"comparison": "figures/comparison.png"}
        report.plot_comparison(rows, tmp / figures["comparison"])
        if report.plot_curves(live_dir, ["train/contrastive", "train/name", "train/synonym", "train/link", "train/mlm"],
                              tmp / "figures" / "losses.png", "pre-training losses (moving mean of 10 steps)", smooth=10):
            figures["losses"] = "figures/losses.png"
        if report.plot_curves(live_dir, ["el/acc@1", "el/acc@5", "hierarchy/hit@10"], tmp / "figures" / "el_curve.png",
                              "the LM on dev during pre-training: entity linking, parent hit@10"):
            figures["el_curve"] = "figures/el_curve.png"
        if report.plot_curves(live_dir, ["train/encoder_share", "train/graph_name_cosine"],
                              tmp / "figures" / "encoder_share.png",
                              "graph vector vs the target's name: ||graph - name|| / ||name||, cosine (moving mean of 10 steps)",
                              smooth=10):
            figures["encoder_share"] = "figures/encoder_share.png"
        if report.plot_curves(live_dir, ["collapse/graph_cosine", "collapse/mention_cosine", "collapse/name_cosine",
                                         "collapse/name_base_cosine"], tmp / "figures" / "collapse.png",
                              "collapse: mean cosine of different concepts' vectors; names to their base vectors",
                              ylabel="mean cosine"):
            figures["collapse"] = "figures/collapse.png"
        (tmp / "report.md").write_text(pages.render_report(rows, figures, ablations, p["base_model"]), encoding="utf-8")
        (tmp / "runs.md").write_text(pages.render_runs(report.stage_runs(p["stage_stats"])), encoding="utf-8")
        write_json(tmp / "compare.json", {f"{r['task']}/{r['model']}": r for r in rows})
        write_json(tmp / "summary.json", report.summary(rows, p["base_model"]))
        params.save_resolved(p, tmp, eval_dir=str(eval_dir), live_dir=str(live_dir))
    print(f"report: {len(rows)} (model, task) results -> {args.out_dir}/report.md")


if __name__ == "__main__":
    main()
