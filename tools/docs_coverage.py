#!/usr/bin/env python3
"""Doc-comment coverage of the library products' public API (run by tools/docs-check).

Reads the symbol graphs swift-symbolgraph-extract wrote for SFTCore and SFTKernels (public
symbols, synthesized members skipped) and fails, listing file:line and the symbol, for every
public symbol without a doc comment. A symbol without its own comment that implements a
documented protocol requirement (CPUBackend's Backend methods, a default implementation, a
Codable `init(from:)`) or overrides a documented member counts as documented: the extractor
already gives it that comment, as DocC shows it.

The pending list (default tools/docs-coverage-pending.txt) names undocumented symbols that
are allowed for now, one `path<TAB>symbol` a line ('#' comments). The check also fails when a
listed symbol is documented or gone, so the list only ever shrinks.

  tools/docs_coverage.py [--pending FILE] SYMBOL_GRAPH_DIR...
  tools/docs_coverage.py --write-pending PATH_PREFIX[,PATH_PREFIX...] SYMBOL_GRAPH_DIR...
      (rewrites the pending list with the undocumented symbols under those source paths)
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
    ap.add_argument("--pending", default=os.path.join(ROOT, "tools/docs-coverage-pending.txt"))
    ap.add_argument("--write-pending", help="write the current undocumented symbols of these path prefixes "
                                            "(comma-separated) to --pending and exit")
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

    if args.write_pending:
        prefixes = tuple(args.write_pending.split(","))
        with open(args.pending, "w") as f:
            f.write("# Public symbols still without a doc comment, allowed for now (issue #17): path<TAB>symbol.\n"
                    "# tools/docs-check fails when one of these is documented or gone; delete its line then.\n")
            for (path, name), n in sorted(missing.items()):
                if path.startswith(prefixes):
                    f.write(f"{path}\t{name}\n" * n)
        return 0

    pending = collections.Counter()
    if os.path.exists(args.pending):
        with open(args.pending) as f:
            for raw in f:
                line = raw.rstrip("\n")
                if line.strip() and not line.lstrip().startswith("#"):
                    path, _, name = line.partition("\t")
                    pending[(path.strip(), name.strip())] += 1

    failures = 0
    for key in sorted(missing):
        extra = missing[key] - pending.get(key, 0)
        if extra > 0:
            for line in where[key][-extra:]:
                print(f"{key[0]}:{line}: error: public symbol '{key[1]}' has no doc comment")
                failures += 1
    for key in sorted(pending):
        stale = pending[key] - missing.get(key, 0)
        if stale > 0:
            print(f"{os.path.relpath(args.pending, ROOT)}: error: '{key[0]}\t{key[1]}' is listed as pending "
                  f"but is documented or gone; delete {'its line' if stale == 1 else f'{stale} of its lines'}")
            failures += 1
    total = len(symbols)
    allowed = sum(min(n, pending.get(k, 0)) for k, n in missing.items())
    if failures:
        print(f"docs coverage: {failures} problem(s) among {total} public symbols")
        return 1
    print(f"docs coverage: {total} public symbols, all documented but the {allowed} listed in "
          f"{os.path.relpath(args.pending, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
