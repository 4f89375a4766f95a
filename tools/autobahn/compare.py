"""Compares an Autobahn fuzzingclient index.json with expected-results.json (or rewrites it).

usage: compare.py check|update INDEX EXPECTED SECONDS [LABEL]
Keeps, per case, only `behavior` and `behaviorClose` — durations and reports change every run.
A case passes only when it equals its expected result and that result is OK or INFORMATIONAL:
NON-STRICT, FAILED or UNIMPLEMENTED never pass, and --update refuses to record them.
Prints one summary line; on a failure, every failing case, and exits 1.
"""
import collections
import json
import sys

PASSING = ("OK", "INFORMATIONAL")


def case_key(case):
    return tuple(int(p) for p in case.split("."))


def main():
    mode, index_path, expected_path, seconds = sys.argv[1:5]
    label = sys.argv[5] if len(sys.argv) > 5 else ""
    tag = "autobahn [%s]" % label if label else "autobahn"
    with open(index_path) as f:
        index = json.load(f)
    got = {}
    for agent in index.values():
        for case, r in agent.items():
            got[case] = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    got = dict(sorted(got.items(), key=lambda kv: case_key(kv[0])))
    counts = collections.Counter(r["behavior"] for r in got.values())
    summary = ", ".join("%s %d" % kv for kv in sorted(counts.items()))
    bad = ["  %s: %s" % (c, r) for c, r in got.items() if r["behavior"] not in PASSING]
    if bad:
        print("%s: %d cases are not OK or INFORMATIONAL:" % (tag, len(bad)), file=sys.stderr)
        print("\n".join(bad), file=sys.stderr)
        print("  (reports: %s)" % index_path, file=sys.stderr)
        return 1
    if mode == "update":
        with open(expected_path, "w") as f:
            json.dump(got, f, indent=2)
            f.write("\n")
        print("%s: %d cases in %ss (%s); wrote %s" % (tag, len(got), seconds, summary, expected_path))
        return 0
    with open(expected_path) as f:
        want = json.load(f)
    diffs = []
    for case in sorted(set(got) | set(want), key=case_key):
        if got.get(case) != want.get(case):
            diffs.append("  %s: expected %s, got %s" % (case, want.get(case), got.get(case)))
    if diffs:
        print("%s: %d cases differ from %s:" % (tag, len(diffs), expected_path), file=sys.stderr)
        print("\n".join(diffs), file=sys.stderr)
        print("  (reports: %s; rerun with --update if the change is intended)" % index_path, file=sys.stderr)
        return 1
    print("%s: %d cases in %ss (%s), as expected" % (tag, len(got), seconds, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
