#!/usr/bin/env python3
"""Doc-comment coverage of the library products' public API (run by tools/docs-check).

Reads the symbol graphs swift-symbolgraph-extract wrote for SFTCore and SFTKernels (public
symbols, synthesized members skipped) and fails, listing file:line and the symbol, for every
public symbol without a doc comment. A symbol without its own comment that implements a
documented protocol requirement (CPUBackend's Backend methods, a default implementation, a
Codable `init(from:)`) or overrides a documented member counts as documented: the extractor
already gives it that comment, as DocC shows it.

  tools/docs_coverage.py SYMBOL_GRAPH_DIR...
"""
import argparse
import collections
import json
import os
import sys
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def load(dirs):
    symbols = {}
    for d in dirs:
        for name in sorted(os.listdir(d)):
            if not name.endswith(".symbols.json"):
                continue
            with open(os.path.join(d, name)) as f:
                g = json.load(f)
            for s in g.get("symbols", []):
                symbols.setdefault(s["identifier"]["precise"], s)
    return symbols


def location(s):
    loc = s.get("location")
    if not loc:
        return "(no source location)", 0
    path = urllib.parse.unquote(urllib.parse.urlparse(loc["uri"]).path)
    return os.path.relpath(path, ROOT), loc["position"]["line"] + 1


def documented(s):
    doc = s.get("docComment")
    return bool(doc and any(l.get("text", "").strip() for l in doc.get("lines", [])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    args = ap.parse_args()
    symbols = load(args.dirs)

    missing = collections.Counter()
    where = {}
    for pid, s in symbols.items():
        if documented(s):
            continue
        path, line = location(s)
        key = (path, ".".join(s["pathComponents"]))
        missing[key] += 1
        where.setdefault(key, []).append(line)

    failures = 0
    for key in sorted(missing):
        for line in where[key]:
            print(f"{key[0]}:{line}: error: public symbol '{key[1]}' has no doc comment")
            failures += 1
    if failures:
        print(f"docs coverage: {failures} of {len(symbols)} public symbols have no doc comment")
        return 1
    print(f"docs coverage: all {len(symbols)} public symbols are documented")
    return 0

if __name__ == "__main__":
    sys.exit(main())
