"""Compares an Autobahn fuzzingclient index.json with expected-results.json (or rewrites it).

usage: compare.py check|update INDEX EXPECTED SECONDS
Keeps, per case, only `behavior` and `behaviorClose` — durations and reports change every run.
Prints one summary line; on a difference, every differing case, and exits 1.
"""
import collections
import json
import sys


def case_key(case):
    return tuple(int(p) for p in case.split("."))


def main():
    mode, index_path, expected_path, seconds = sys.argv[1:]
    with open(index_path) as f:
        index = json.load(f)
    got = {}
    for agent in index.values():
        for case, r in agent.items():
            got[case] = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    got = dict(sorted(got.items(), key=lambda kv: case_key(kv[0])))
    counts = collections.Counter(r["behavior"] for r in got.values())
    summary = ", ".join("%s %d" % kv for kv in sorted(counts.items()))
    if mode == "update":
        with open(expected_path, "w") as f:
            json.dump(got, f, indent=2)
            f.write("\n")
        print("autobahn: %d cases in %ss (%s); wrote %s" % (len(got), seconds, summary, expected_path))
        return 0
    with open(expected_path) as f:
        want = json.load(f)
    diffs = []
    for case in sorted(set(got) | set(want), key=case_key):
        if got.get(case) != want.get(case):
            diffs.append("  %s: expected %s, got %s" % (case, want.get(case), got.get(case)))
    if diffs:
        print("autobahn: %d cases differ from %s:" % (len(diffs), expected_path), file=sys.stderr)
        print("\n".join(diffs), file=sys.stderr)
        print("  (reports: %s; rerun with --update if the change is intended)" % index_path, file=sys.stderr)
        return 1
    print("autobahn: %d cases in %ss (%s), as expected" % (len(got), seconds, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
