#!/usr/bin/env python3
"""The audit log's hash chain, recomputed the way a SIEM rule would.

Reads Permafrost audit entries (JSON lines, exactly as the daemon wrote them,
e.g. the `raw` field the Vector pipeline ships) from files or stdin, and for
each writer (`actor`) checks:

  hash  == hex(SHA-256("PERMAFROST/AUDIT/v1" || body)), where body is the
           compact JSON of {"seq","ts","actor","event","detail","prev"} in
           that order, `detail` with its keys sorted (serde_json's output)
  seq   == previous seq + 1, starting at 1
  prev  == previous entry's hash, 64 zeros for the first

It does not check the Ed25519 signatures of `checkpoint` entries, nor a
truncated tail: `permafrostctl audit verify FILE --key <identity key> --head
<entries:hash>` does both and is the authority. Exit 0 if every entry checks.

Usage: audit_chain.py [FILE...]   (stdin without FILE)
"""

import hashlib
import json
import sys

DOMAIN = b"PERMAFROST/AUDIT/v1"
GENESIS = "0" * 64


def _json(value, sort_keys=False):
    # serde_json's compact form: no spaces, non-ASCII as is, control characters escaped.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


def entry_hash(e):
    body = '{"seq":%d,"ts":%d,"actor":%s,"event":%s,"detail":%s,"prev":%s}' % (
        e["seq"], e["ts"], _json(e["actor"]), _json(e["event"]),
        _json(e["detail"], sort_keys=True), _json(e["prev"]))
    return hashlib.sha256(DOMAIN + body.encode("utf-8")).hexdigest()


def check(lines, source):
    heads = {}  # actor -> (seq, hash)
    problems = []
    n = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            problems.append(f"{source} line {n}: empty line")
            continue
        try:
            e = json.loads(line)
        except ValueError as err:
            problems.append(f"{source} line {n}: not JSON ({err})")
            continue
        seq, prev = heads.get(e.get("actor"), (0, GENESIS))
        if e.get("seq") != seq + 1:
            problems.append(f"{source} line {n}: {e.get('actor')} seq {e.get('seq')} where {seq + 1} was expected")
        if e.get("prev") != prev:
            problems.append(f"{source} line {n}: does not chain to the previous entry of {e.get('actor')}")
        if entry_hash(e) != e.get("hash"):
            problems.append(f"{source} line {n}: hash mismatch (entry {e.get('seq')} edited)")
        heads[e.get("actor")] = (e.get("seq"), e.get("hash"))
    return n, heads, problems


def main(paths):
    total_problems = []
    for path in paths or ["-"]:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8", newline="\n")
        lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        n, heads, problems = check(lines, path)
        total_problems += problems
        for actor, (seq, h) in sorted(heads.items()):
            print(f"{path}: {actor}: {seq} entries chain, head {h}" if not problems else f"{path}: {actor}: checked {n} lines")
    for p in total_problems:
        print(f"FAIL {p}")
    return 1 if total_problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
