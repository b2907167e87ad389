"""Ablations as DVC experiments: each row of ablations/NAME.yaml is one `dvc exp run --temp -n ROW
-S ...` of the pipeline, and the table is read back from `dvc exp show --json`.

  python -m bali.ablations run ablations/demo.yaml     # runs the rows that are not there yet
  python -m bali.ablations table ablations/demo.yaml   # -> ablations/demo.csv (the report's table)
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
from pathlib import Path

import yaml

FIELDS = ["row", "what", "overrides", "dev acc@1", "dev Δ vs base (pts)", "test acc@1", "test Δ vs base (pts) [95 % CI]",
          "test McNemar p", "test seen acc@1", "test unseen acc@1", "held-out parent hit@10", "hit@10 Δ vs base (pts) [95 % CI]"]
# Rows are compared on dev (where a setting is chosen) and reported on test (never used to choose).
DEV, TEST, HIERARCHY = "demo_el_dev", "demo_el_test", "hierarchy_held_out"


def rows(spec: Path) -> list[dict]:
    return yaml.safe_load(spec.read_text(encoding="utf-8"))["rows"]


def experiments() -> dict[str, dict]:
    """{experiment name: its data} from `dvc exp show --json --all-commits`; of two experiments with
    one name, the one on the newest commit."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True,
                                      text=True, check=True).stdout)
    found = {}
    for rev in shown:
        for exp in rev.get("experiments") or []:
            for r in exp.get("revs", []):
                if r.get("name") and r.get("data") and r["name"] not in found:
                    found[r["name"]] = r["data"]
    return found


def run(spec: Path) -> None:
    done = experiments()
    for row in rows(spec):
        if row["name"] in done:
            print(f"ablations: {row['name']} is already an experiment; `dvc exp remove {row['name']}` to rerun it")
            continue
        cmd = ["dvc", "exp", "run", "--temp", "-n", row["name"]] + [a for o in row["set"] for a in ("-S", o)]
        print("ablations:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def _delta(paired: dict, interval: bool) -> str:
    if not paired:
        return ""
    ci = f" [{100 * paired['ci95_low']:+.1f}, {100 * paired['ci95_high']:+.1f}]" if interval and "ci95_low" in paired else ""
    return f"{100 * paired['delta']:+.1f}{ci}"


def figures(data: dict, model: str = "bali") -> dict:
    compare = data["metrics"]["reports/compare.json"]["data"]
    dev, test, hier = (compare.get(f"{t}/{model}", {}) for t in (DEV, TEST, HIERARCHY))
    num = lambda r, k: f"{r[k]:.3f}" if k in r else ""  # noqa: E731
    return {"dev acc@1": num(dev, "value"), "dev Δ vs base (pts)": _delta(dev.get("paired", {}), False),
            "test acc@1": num(test, "value"), "test Δ vs base (pts) [95 % CI]": _delta(test.get("paired", {}), True),
            "test McNemar p": f"{test['paired']['mcnemar_p']:.2g}" if "paired" in test else "",
            "test seen acc@1": num(test, "seen acc@1"), "test unseen acc@1": num(test, "unseen acc@1"),
            "held-out parent hit@10": num(hier, "value"), "hit@10 Δ vs base (pts) [95 % CI]": _delta(hier.get("paired", {}), True)}


def table(spec: Path, out: Path) -> None:
    found = experiments()
    missing = [r["name"] for r in rows(spec) if r["name"] not in found]
    if missing:
        raise SystemExit(f"ablations: no experiment named {', '.join(missing)}; run `python -m bali.ablations run {spec}`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows(spec):
            w.writerow({"row": r["name"], "what": r["what"], "overrides": " ".join(f"-S {o}" for o in r["set"]),
                        **figures(found[r["name"]])})
    tmp.replace(out)
    print(f"ablations: {len(rows(spec))} rows -> {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "table"])
    ap.add_argument("spec", type=Path)
    args = ap.parse_args(argv)
    if args.action == "run":
        run(args.spec)
    else:
        table(args.spec, args.spec.with_suffix(".csv"))


if __name__ == "__main__":
    main()
