#!/usr/bin/env python3
"""Compare a `dualnet verify --instances` results csv with the 2021 tools' answers.

    scripts/check_violated.py RESULTS_2021_CSV DUALNET_CSV

Prints dualnet's counts (unsat/sat/unknown/timeout/error, with the median seconds of each) beside every 2021
tool's holds + violated, and exits 1 if dualnet answered `unsat` on an instance where more tools answered
`violated` than `holds` (the README of ../shared/vnncomp: "go by the tools that agree"). An `unsat` where a
`violated` stands against as many `holds` is printed as contested. Standard library only.
"""
import csv
import statistics
import sys
from collections import defaultdict


def main(ref_path, ours_path):
    votes = defaultdict(lambda: [0, 0])
    tools = defaultdict(lambda: [0, 0])
    with open(ref_path) as f:
        for row in csv.DictReader(f):
            key = (row["onnx"], row["vnnlib"])
            if row["result"] == "violated":
                votes[key][0] += 1
                tools[row["tool"]][1] += 1
            elif row["result"] == "holds":
                votes[key][1] += 1
                tools[row["tool"]][0] += 1
    times = defaultdict(list)
    wrong, contested = [], []
    with open(ours_path) as f:
        for row in csv.DictReader(f):
            key = (row["onnx"], row["vnnlib"])
            times[row["result"]].append(float(row["seconds"]))
            v, h = votes.get(key, (0, 0))
            if row["result"] == "unsat" and v > 0:
                (wrong if v > h else contested).append(f"{key[0]} {key[1]} ({v} violated, {h} holds)")
    n = sum(len(t) for t in times.values())
    parts = [f"{len(times[w])} {w} (median {statistics.median(times[w]):.2f} s)" for w in
             ["unsat", "sat", "unknown", "timeout", "error"] if times[w]]
    print(f"dualnet: {n} instances: " + ", ".join(parts))
    for tool, (h, v) in sorted(tools.items(), key=lambda t: -sum(t[1])):
        print(f"  2021 {tool}: {h} holds + {v} violated")
    for c in contested:
        print(f"  contested unsat (a holds backs it): {c}")
    for w in wrong:
        print(f"  UNSOUND? unsat where the tools that agree found a counterexample: {w}")
    return 1 if wrong else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
