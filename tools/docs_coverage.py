#!/usr/bin/env python3
"""Doc-comment coverage of the library products' public API (run by tools/docs-check).

Reads the symbol graphs swift-symbolgraph-extract wrote for SFTCore and SFTKernels (public
symbols, synthesized members skipped) and fails, listing file:line and the symbol, for every
public symbol without a doc comment. A symbol without its own comment counts as documented
when DocC shows a documented one in its place:
  - it implements a protocol requirement (a default implementation in a protocol extension,
    or a member of a conforming type with the requirement's name and kind) whose requirement
    is documented, or whose protocol lives outside these modules (Swift's `description`,
    `init(from:)`, ...);
  - it overrides a documented member of its superclass.

The pending list (default tools/docs-coverage-pending.txt) names undocumented symbols that
are allowed for now, one `path<TAB>symbol` a line ('#' comments). The check also fails when a
listed symbol is documented or gone, so the list only ever shrinks.

  tools/docs_coverage.py [--pending FILE] [--write-pending FILE] SYMBOL_GRAPH_DIR...
"""
import argparse
import collections
import json
import os
import sys
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# Symbol kinds that are members a protocol requirement can be implemented by.
MEMBER_KINDS = {"swift.property", "swift.type.property", "swift.method", "swift.type.method", "swift.init",
                "swift.subscript", "swift.type.subscript", "swift.func.op", "swift.typealias",
                "swift.associatedtype", "swift.enum.case"}


def load(dirs):
    symbols, rels = {}, []
    for d in dirs:
        for name in sorted(os.listdir(d)):
            if not name.endswith(".symbols.json"):
                continue
            with open(os.path.join(d, name)) as f:
                g = json.load(f)
            for s in g.get("symbols", []):
                symbols.setdefault(s["identifier"]["precise"], s)
            rels += g.get("relationships", [])
    return symbols, rels


def location(s):
    loc = s.get("location")
    if not loc:
        return None, 0
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
    symbols, rels = load(args.dirs)

    parent = {}            # member → its type (or protocol)
    conforms = collections.defaultdict(set)   # type → protocols (precise ids, or names outside)
    requirements = collections.defaultdict(list)   # protocol → requirement symbols
    inherited = set()      # symbols that stand for a documented (or outside) declaration
    for r in rels:
        kind, src, tgt = r["kind"], r["source"], r["target"]
        if kind == "memberOf":
            parent[src] = tgt
        elif kind == "conformsTo":
            conforms[src].add(tgt)
        elif kind in ("requirementOf", "optionalRequirementOf"):
            requirements[tgt].append(src)
        elif kind in ("defaultImplementationOf", "overrides"):
            t = symbols.get(tgt)
            if t is None or documented(t):
                inherited.add(src)

    def implements_requirement(pid, s):
        owner = parent.get(pid)
        if owner is None:
            return False
        title, kind = s["names"]["title"], s["kind"]["identifier"]
        for proto in conforms.get(owner, ()):
            if proto not in symbols:
                # A protocol outside these modules (Equatable, Codable, CustomStringConvertible,
                # Error, ...): its requirements carry the standard library's documentation.
                if title in OUTSIDE_REQUIREMENTS:
                    return True
                continue
            for req in requirements.get(proto, ()):
                r = symbols.get(req)
                if r and r["names"]["title"] == title and r["kind"]["identifier"] == kind and documented(r):
                    return True
        return False

    missing = collections.Counter()
    where = {}
    for pid, s in symbols.items():
        if documented(s) or pid in inherited:
            continue
        if s["kind"]["identifier"] in MEMBER_KINDS and implements_requirement(pid, s):
            continue
        path, line = location(s)
        if path is None or not path.startswith("Sources/"):
            continue
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
    print(f"docs coverage: every public symbol of {total} documented ({allowed} pending in "
          f"{os.path.relpath(args.pending, ROOT)})")
    return 0


# Requirement names of the standard library's protocols that sft's public types conform to.
OUTSIDE_REQUIREMENTS = {
    "description", "debugDescription", "init(from:)", "encode(to:)", "rawValue", "init(rawValue:)",
    "hash(into:)", "hashValue", "==(_:_:)", "<(_:_:)", "allCases", "errorDescription", "localizedDescription",
    "makeIterator()", "next()", "startIndex", "endIndex", "index(after:)", "subscript(_:)",
    "init(stringLiteral:)", "init(integerLiteral:)", "init(floatLiteral:)", "init(booleanLiteral:)",
    "init(arrayLiteral:)", "init(dictionaryLiteral:)", "init(nilLiteral:)", "init(extendedGraphemeClusterLiteral:)",
    "init(unicodeScalarLiteral:)",
}

if __name__ == "__main__":
    sys.exit(main())
