#!/usr/bin/env python3
"""Join the rounds of several `quarry simulate` runs into one folder that `quarry report` reads.

Runs split across processes (one per core, or one per strategy) are joined here: RUN:OFFSET adds
OFFSET to every repeat number of RUN, so a run made with `--seed 3` (its repeat r trains with
seed 3 + r) becomes repeats 3, 4, ... of a run made with `--seed 0`. summary.json's header (data
set, model, configuration) is the first run's, with the joined strategies and repeat count.
Then: `quarry report OUT [--baseline NAME]`.

Usage: bench/join_runs.py OUT RUN[:OFFSET] [RUN[:OFFSET] ...]
Standard library only; OUT must not hold a rounds.jsonl already.
"""
import argparse, json, os, sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+", metavar="RUN[:OFFSET]")
    a = ap.parse_args()
    target = os.path.join(a.out, "rounds.jsonl")
    if os.path.lexists(target):
        ap.error(f"{target} exists: choose a new folder")
    rows, header = [], None
    for spec in a.runs:
        run, _, off = spec.partition(":")
        try:
            offset = int(off or 0)
        except ValueError:
            ap.error(f"{spec}: OFFSET must be an integer")
        path = os.path.join(run, "rounds.jsonl")
        try:
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        r = json.loads(line)
                        r["repeat"] += offset
                        rows.append(r)
        except OSError as e:
            sys.exit(f"join_runs.py: {path}: cannot read ({e.strerror})")
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"join_runs.py: {path}: line {n}: not a round of simulate ({e!r})")
        if header is None and os.path.exists(os.path.join(run, "summary.json")):
            with open(os.path.join(run, "summary.json")) as f:
                header = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    with open(target, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    if header is not None and isinstance(header.get("config"), dict):
        c = header["config"]
        c["strategies"] = list(dict.fromkeys(r["strategy"] for r in rows))
        c["repeats"] = len({r["repeat"] for r in rows})
        c.pop("seconds", None)
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(header, f, indent=2)
    print(f"{target}: {len(rows)} rounds from {len(a.runs)} runs")


if __name__ == "__main__":
    main()
