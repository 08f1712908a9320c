#!/usr/bin/env python3
"""What the stopping rule would have saved and cost, for several settings, on a finished run.

Reads DIR/rounds.jsonl of a `quarry simulate --stop ...` run (any threshold: every round's kappa
is recorded) and applies kappa:THRESHOLD:WINDOW for each setting, as quarry does: the rule fires
at the first round where the mean of the last WINDOW kappas reaches THRESHOLD. For each strategy
and setting: the repeats where it fired, the mean labels at firing, the labels saved (the last
round's labels minus those) and the accuracy and balanced accuracy lost by stopping there (the
last round's minus the firing round's), over the repeats where it fired.

Usage: bench/stop_rule.py DIR [--thresholds 0.9,0.925,0.95,0.975,0.99] [--windows 2,3] [--json OUT]
"""
import argparse
import json
import os
import sys
from collections import defaultdict


def fires(kappas, threshold, window):
    return len(kappas) >= window and sum(kappas[-window:]) / window >= threshold


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--thresholds", default="0.9,0.925,0.95,0.975,0.99")
    ap.add_argument("--windows", default="2,3")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    runs = defaultdict(dict)  # (strategy, repeat) -> round -> record
    with open(os.path.join(a.dir, "rounds.jsonl")) as f:
        for n, line in enumerate(f, 1):
            try:
                r = json.loads(line)
                runs[(r["strategy"], r["repeat"])][r["round"]] = r
            except (ValueError, KeyError) as e:
                sys.exit(f"{a.dir}/rounds.jsonl: line {n}: {e}")
    # Only the (strategy, repeat) runs that reached the run's last round (an interrupted one is left out).
    last_round = max(max(rounds) for rounds in runs.values())
    for key in [k for k, rounds in runs.items() if max(rounds) != last_round]:
        print(f"{key[0]} repeat {key[1] + 1} stopped at round {max(runs[key])} of {last_round}: left out", file=sys.stderr)
        del runs[key]
    if not any("stop_kappa" in r for rounds in runs.values() for r in rounds.values()):
        sys.exit(f"{a.dir}: no stop_kappa in rounds.jsonl (run simulate with --stop)")
    out = []
    for threshold in [float(t) for t in a.thresholds.split(",")]:
        for window in [int(w) for w in a.windows.split(",")]:
            per = defaultdict(lambda: {"repeats": 0, "fired": 0, "labels": [], "saved": [], "acc_cost": [], "bal_cost": []})
            for (strategy, repeat), rounds in sorted(runs.items()):
                s = per[strategy]
                s["repeats"] += 1
                last = rounds[max(rounds)]
                kappas = []
                for k in sorted(rounds):
                    kappa = rounds[k].get("stop_kappa")
                    if kappa is None:
                        continue
                    kappas.append(kappa)
                    if fires(kappas, threshold, window):
                        at = rounds[k]
                        s["fired"] += 1
                        s["labels"].append(at["labels"])
                        s["saved"].append(last["labels"] - at["labels"])
                        s["acc_cost"].append(last["accuracy"] - at["accuracy"])
                        s["bal_cost"].append(last["balanced_accuracy"] - at["balanced_accuracy"])
                        break
            for strategy, s in per.items():
                mean = lambda v: sum(v) / len(v) if v else None
                out.append({"rule": f"kappa:{threshold:g}:{window}", "strategy": strategy, "repeats": s["repeats"],
                            "fired": s["fired"], "labels_at_firing": mean(s["labels"]),
                            "labels_saved": mean(s["saved"]), "accuracy_lost": mean(s["acc_cost"]),
                            "balanced_accuracy_lost": mean(s["bal_cost"])})
    fmt = lambda v, f: "–" if v is None else f.format(v)
    print("| rule | strategy | fired | labels at firing | labels saved | accuracy lost | balanced accuracy lost |")
    print("| --- | --- | --: | --: | --: | --: | --: |")
    for e in out:
        print(f"| {e['rule']} | {e['strategy']} | {e['fired']}/{e['repeats']} | {fmt(e['labels_at_firing'], '{:.0f}')} | "
              f"{fmt(e['labels_saved'], '{:.0f}')} | {fmt(e['accuracy_lost'], '{:+.4f}')} | "
              f"{fmt(e['balanced_accuracy_lost'], '{:+.4f}')} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"run": os.path.abspath(a.dir), "rules": out}, f, indent=1)


if __name__ == "__main__":
    main()
