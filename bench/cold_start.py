#!/usr/bin/env python3
"""The cold start on MNIST: how much a chosen initial set beats a random one while labels are few.

Runs `quarry simulate` once per arm with the protocol 20 + 10 x 20 labels, 5 repeats, on a 20k
subset of ../shared/data/mnist. An arm is SEED (the --seed-strategy: random, typiclust or
probcover; random sampling after the initial set) or SEED+STRATEGY (that strategy after it, e.g.
typiclust+auto: typicality over the same embeddings until 10 labels per class, then BADGE). Each
arm's accuracy is compared with the random arm's, repeat by repeat (repeat r of every run trains
with the same seed), at every budget: the mean paired difference with a bootstrap 95% interval.
The cold-start embeddings are the pool's pixels, or --seed-embeddings E.npy, or with --pretrain
the embeddings `quarry pretrain` learns from the pool's images (no labels) before the runs; its
time and losses go into the results (the embeddings file itself is deleted afterwards).

--classifier cnn (default) trains every arm's model, a CNN, on the images. --classifier embeddings
trains an MLP on the pretrained embeddings instead (the embeddings are the dataset: npy:E.npy,Y.npy
with the pool's labels that `quarry pretrain --labels-out` writes, so quarry holds out 20% of the
20k pool for testing and 10% of the rest for validation; the pool is 14,400). It needs --pretrain,
or --seed-embeddings with --pool-labels.

Writes bench/results/cold-start-<UTC time>-<commit>.json and keeps each run's report folder
beside it. Usage: bench/cold_start.py [--repeats 5] [--rounds 10] [--build build] [--pretrain [--pretrain-epochs 10] |
    --seed-embeddings E.npy [--pool-labels Y.npy]] [--classifier cnn|embeddings]
    [--arms random,typiclust,probcover,typiclust+auto] [--resume bench/results/cold-start-...]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bootstrap_mean(values, resamples=2000, seed=0):
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(resamples))
    return [means[int(0.025 * (resamples - 1))], means[int(0.975 * (resamples - 1))]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--build", default="build")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed-embeddings", default="")
    ap.add_argument("--pretrain", action="store_true", help="embeddings from quarry pretrain on the pool")
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10, help="rounds of 20 after the initial set (1: 20 and 40 labels)")
    ap.add_argument("--classifier", choices=["cnn", "embeddings"], default="cnn",
                    help="the model every arm trains: a CNN on the images, or an MLP on the embeddings")
    ap.add_argument("--pool-labels", default="", help="with --seed-embeddings and --classifier embeddings: "
                                                      "the pool's labels (quarry pretrain --labels-out)")
    ap.add_argument("--arms", default="random,typiclust,probcover,typiclust+auto")
    ap.add_argument("--resume", default="", help="an interrupted run's folder: its finished arms are kept")
    a = ap.parse_args()
    data = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
    if not os.path.isdir(data):
        sys.exit(f"cold_start.py: {data} is missing (the shared data sets)")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = a.resume.rstrip("/") or os.path.join(ROOT, "bench", "results", f"cold-start-{stamp}-{commit}")
    os.makedirs(out, exist_ok=bool(a.resume))
    if a.resume and os.path.exists(os.path.join(out, "pretrained.npy")):
        a.pretrain, a.seed_embeddings = False, os.path.join(out, "pretrained.npy")
        if os.path.exists(os.path.join(out, "pool-labels.npy")):
            a.pool_labels = os.path.join(out, "pool-labels.npy")
    if a.classifier == "embeddings" and not (a.pretrain or (a.seed_embeddings and a.pool_labels)):
        sys.exit("cold_start.py: --classifier embeddings needs --pretrain, or --seed-embeddings with --pool-labels")
    pool = ["--dataset", f"idx:{data}", "--pool-limit", "20000"]
    pretrain = None
    if a.pretrain:
        if a.seed_embeddings:
            sys.exit("cold_start.py: --pretrain or --seed-embeddings, not both")
        a.seed_embeddings = os.path.join(out, "pretrained.npy")
        a.pool_labels = os.path.join(out, "pool-labels.npy")
        t = time.time()
        p = subprocess.run([os.path.join(ROOT, a.build, "quarry"), "pretrain", *pool, "--threads", str(a.threads),
                            "--epochs", str(a.pretrain_epochs), "--out", a.seed_embeddings,
                            "--labels-out", a.pool_labels],
                           check=True, capture_output=True, text=True)
        pretrain = {"seconds": time.time() - t, "epochs": a.pretrain_epochs, "output": p.stdout.strip()}
        with open(os.path.join(out, "pretrain.json"), "w") as f:  # kept for --resume
            json.dump(pretrain, f, indent=1)
        print(f"pretrain: {pretrain['seconds']:.0f} s", file=sys.stderr)
    elif a.resume and os.path.exists(os.path.join(out, "pretrain.json")):
        with open(os.path.join(out, "pretrain.json")) as f:
            pretrain = json.load(f)
    curves = {}
    arms = a.arms.split(",")
    if "random" not in arms:
        sys.exit("cold_start.py: --arms must include random, the baseline")
    for arm in arms:
        seed, _, after = arm.partition("+")
        after = after or "random"
        run = os.path.join(out, "seed-" + arm.replace("+", "-then-"))
        source = pool
        if a.classifier == "embeddings":  # the model's inputs are the embeddings, typicality runs over them too
            source = ["--dataset", f"npy:{a.seed_embeddings},{a.pool_labels}", "--model", "mlp"]
        cmd = [os.path.join(ROOT, a.build, "quarry"), "simulate", *source,
               "--strategies", after, "--seed-size", "20", "--batch", "20", "--rounds", str(a.rounds),
               "--repeats", str(a.repeats), "--threads", str(a.threads), "--seed-strategy", seed, "--out", run]
        if a.seed_embeddings and a.classifier == "cnn" and (seed != "random" or after == "auto"):
            cmd += ["--seed-embeddings", a.seed_embeddings]
        rounds = os.path.join(run, "rounds.jsonl")
        if a.resume and os.path.exists(rounds) and sum(1 for _ in open(rounds)) == a.repeats * (a.rounds + 1):
            print(f"{arm}: kept from {run}", file=sys.stderr)
        else:
            t = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            print(f"{arm}: {time.time() - t:.0f} s", file=sys.stderr)
        strategy = arm
        acc = {}
        with open(os.path.join(run, "rounds.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                acc.setdefault(r["repeat"], {})[r["labels"]] = r["accuracy"]
        curves[strategy] = acc
    base = curves["random"]
    result = {"dataset": f"idx:{data} (20k pool)",
              "protocol": f"20 + {a.rounds} x 20 labels; an arm SEED samples at random after the initial set, "
                          "SEED+STRATEGY with STRATEGY",
              "repeats": a.repeats, "commit": commit,
              "classifier": ("a CNN on the images (test: MNIST's test set)" if a.classifier == "cnn" else
                             "an MLP on the pretrained embeddings (npy:E,Y: 20% of the 20k pool held out for "
                             "testing, 10% of the rest for validation; pool 14,400)"),
              "embeddings": ("quarry pretrain on the pool (no labels)"
                             if pretrain or a.seed_embeddings.endswith("pretrained.npy") else a.seed_embeddings)
              or "the pool's pixels", "pretrain": pretrain,
              "machine": f"{os.cpu_count()} CPUs", "strategies": {}}
    for strategy, acc in curves.items():
        entry = {"accuracy": {}, "difference_from_random": {}}
        for labels in range(20, 221, 20):
            mine = [acc[r][labels] for r in sorted(acc) if labels in acc[r]]
            if not mine:
                continue
            entry["accuracy"][str(labels)] = {"mean": sum(mine) / len(mine), "per_repeat": mine}
            if strategy != "random":
                diff = [acc[r][labels] - base[r][labels] for r in sorted(acc) if labels in acc[r] and r in base]
                entry["difference_from_random"][str(labels)] = {"mean": sum(diff) / len(diff), "per_repeat": diff,
                                                                "ci95": bootstrap_mean(diff)}
        result["strategies"][strategy] = entry
    if a.seed_embeddings == os.path.join(out, "pretrained.npy"):  # 10 MB of derived data: the run's
        os.remove(a.seed_embeddings)                                # record is its losses and time
        if os.path.exists(os.path.join(out, "pool-labels.npy")):
            os.remove(os.path.join(out, "pool-labels.npy"))
    path = out + ".json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    for strategy, entry in result["strategies"].items():
        line = "  ".join(f"{k} labels {v['mean']:.3f}" for k, v in entry["accuracy"].items())
        print(f"{strategy:10s} {line}")
        for k, v in entry["difference_from_random"].items():
            print(f"    vs random at {k}: {100 * v['mean']:+.1f} points [{100 * v['ci95'][0]:+.1f}, {100 * v['ci95'][1]:+.1f}]")
    print(path)


if __name__ == "__main__":
    main()
