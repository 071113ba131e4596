"""Steps the tools/check_*.py scripts share: the common arguments (--dir for the Swift tests'
output, --no-swift to reuse it, --gguf for the model), running a Swift test with
$SFT_EXPORT_DIR set, and recording the result in Tests/SFTCoreTests/Fixtures/export/results/
(a pass/fail exit status too)."""
import argparse, json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "SFTCoreTests", "Fixtures")


def arguments(gguf=True):
    """An argument parser with --dir and --no-swift (and --gguf)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/sft-export-check")
    ap.add_argument("--no-swift", action="store_true")
    if gguf:
        ap.add_argument("--gguf", default=os.path.join(os.environ.get("SFT_ASSETS", os.path.join(ROOT, ".assets")),
                                                       "SmolLM2-135M-Instruct.Q4_1.gguf"))
    return ap


def swift_test(a, test):
    """Runs the Swift test `test` writing into a.dir (unless --no-swift); returns its environment."""
    env = dict(os.environ, SFT_EXPORT_DIR=a.dir)
    env.setdefault("SFT_ASSETS", os.path.dirname(a.gguf) if getattr(a, "gguf", None) else os.path.join(ROOT, ".assets"))
    if not a.no_swift:
        subprocess.run(["swift", "test", "-c", "release", "--filter", test], cwd=ROOT, env=env, check=True)
    return env


def record(report, ok, name, ensure_ascii=True):
    """Writes the report (with its pass flag) to results/NAME.json and exits 0 on a pass."""
    report["pass"] = ok
    dest = os.path.join(FIX, "export", "results", name + ".json")
    with open(dest, "w") as f:
        json.dump(report, f, indent=1, ensure_ascii=ensure_ascii)
        f.write("\n")
    print("PASS" if ok else "FAIL", "->", dest)
    sys.exit(0 if ok else 1)
