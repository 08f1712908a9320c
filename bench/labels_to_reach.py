#!/usr/bin/env python3
"""Labels each strategy of a simulation needs to reach fixed accuracies, against a baseline.

Reads a `quarry simulate` rounds.jsonl (or several, joined: runs with the same seeds share their
repeats' initial sets) and, for each target accuracy, prints per repeat the labels at which the
strategy's curve first reaches it (linear between rounds) and the paired difference from the
baseline's, with a 95% paired bootstrap interval over the repeats both finished. `quarry report`
reads savings against the baseline's final accuracy; this reads them along the curve.

Usage: bench/labels_to_reach.py ROUNDS.jsonl [MORE.jsonl ...] --baseline bald --strategy batchbald
                                [--targets 0.94,0.95,0.96,0.97] [--metric accuracy]
Standard library only.
"""
import argparse
import collections
import json
import random
import sys


def reach(curve, target):
    """The labels at which `curve` ({labels: value}) first reaches target, linear between rounds."""
    prev = None
    for labels in sorted(curve):
        v = curve[labels]
        if v >= target:
            if prev is None:
                return float(labels)
            l0, v0 = prev
            return l0 + (labels - l0) * (target - v0) / (v - v0)
        prev = (labels, v)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rounds", nargs="+")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--targets", default="0.94,0.95,0.96,0.97")
    ap.add_argument("--metric", default="accuracy", choices=["accuracy", "balanced_accuracy", "macro_f1"])
    ap.add_argument("--resamples", type=int, default=10000)
    a = ap.parse_args()
    if a.resamples < 100:
        ap.error(f"--resamples {a.resamples}: expected at least 100 bootstrap resamples")
    try:
        targets = [float(t) for t in a.targets.split(",")]
    except ValueError:
        ap.error(f"--targets {a.targets!r}: expected comma-separated accuracies such as 0.95,0.96")

    curves = collections.defaultdict(dict)  # (strategy, repeat) -> {labels: value}
    rounds = collections.defaultdict(int)
    for path in a.rounds:
        try:
            f = open(path)
        except OSError as e:
            sys.exit(f"labels_to_reach.py: {path}: cannot read ({e.strerror})")
        with f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    key = (r["strategy"], r["repeat"])
                    curves[key][r["labels"]] = r[a.metric]
                    rounds[key] = max(rounds[key], r["round"])
                except (ValueError, KeyError, TypeError) as e:
                    sys.exit(f"labels_to_reach.py: {path}: line {line_no}: not a round of simulate ({e!r})")
    last = max(rounds.values(), default=0)
    finished = lambda s: {rep for (st, rep), r in rounds.items() if st == s and r == last}
    repeats = sorted(finished(a.baseline) & finished(a.strategy))
    if not repeats:
        sys.exit(f"labels_to_reach.py: no repeat in which both {a.baseline} and {a.strategy} finished")
    rng = random.Random(0)
    print(f"{a.metric}: {a.strategy} against {a.baseline}, {len(repeats)} paired repeats {repeats}")
    for t in targets:
        pairs = [(reach(curves[(a.baseline, r)], t), reach(curves[(a.strategy, r)], t)) for r in repeats]
        shown = ", ".join(f"{'-' if b is None else round(b)}/{'-' if s is None else round(s)}" for b, s in pairs)
        both = [s - b for b, s in pairs if b is not None and s is not None]
        line = f"  {t:.4f}: labels {a.baseline}/{a.strategy} per repeat {shown}"
        if len(both) == len(pairs):
            means = sorted(sum(rng.choice(both) for _ in both) / len(both) for _ in range(a.resamples))
            lo, hi = means[int(0.025 * a.resamples)], means[int(0.975 * a.resamples) - 1]
            fewer = sum(d < 0 for d in both)
            line += (f"; difference {sum(both) / len(both):+.0f} [{lo:+.0f}, {hi:+.0f}]"
                     f" ({fewer} of {len(both)} repeats fewer)")
        else:
            line += "; not reached in every repeat: no interval"
        print(line)


if __name__ == "__main__":
    main()
