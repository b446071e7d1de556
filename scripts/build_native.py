"""Compile ``robust``'s per-reading path with mypyc: ``make native`` (``make dev`` runs it).

    python scripts/build_native.py [--force]

Compiles ``edge_agent/detectors/robust.py`` (the same source, unchanged: mypyc reads its types)
into a shared library beside it and writes ``robust.native.sha256``, the digest of the source it
was built from. ``edge_agent/detectors/native.py`` uses the library only while that digest is the
source's own, so an edit after a build scores interpreted until the next build, never stale.

Needs mypy (the ``native`` extra: ``pip install 'edge-agent[native]'``), a C compiler and the
Python headers. Takes ~40 s on a 2-core x86 gateway; does nothing when the build is current
(``--force`` rebuilds). Exit status: 0 built or current, 1 the build failed, 2 mypy missing.
Why compiled, and what it measured: ``native.py``'s docstring and docs/detectors.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.detectors import native  # noqa: E402  (the repository's, not an installed copy)

# What mypyc reads: the module and the package's other modules, for their types (copied to a
# scratch directory, so that the build sees no pyproject.toml and leaves nothing in the tree).
PACKAGE = REPO / "edge_agent"
MODULE_PATH = "edge_agent/detectors/robust.py"

# Run in the scratch directory by the interpreter that has mypy (this one).
SETUP = f"""
from mypyc.build import mypycify
from setuptools import setup
# (errors in the modules it imports are theirs, not the build's: their types are still read)
setup(name="edge_agent_native",
      ext_modules=mypycify(["--follow-imports=silent", "--ignore-missing-imports", {MODULE_PATH!r}], opt_level="3"),
      script_args=["build_ext", "--inplace"])
"""


def build(force: bool) -> int:
    here = native.DIRECTORY
    source = native.SOURCE.read_bytes()
    digest = native.digest_of(source)
    if not force and native.built_libraries(here) and native.recorded_digest(here) == digest:
        print(f"robust is compiled and current ({digest[:12]}): nothing to do")
        return 0
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("build_native: mypy is not installed (pip install 'edge-agent[native]'); robust runs interpreted",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edge-agent-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(PACKAGE, work / "edge_agent", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.sha256"))
        (work / MODULE_PATH).write_bytes(source)  # (exactly the bytes the digest is of)
        print(f"compiling {MODULE_PATH} with mypyc (~40 s) ...", flush=True)
        done = subprocess.run([sys.executable, "-c", SETUP], cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            print("build_native: the build failed; robust runs interpreted", file=sys.stderr)
            return 1
        built = native.built_libraries(work / "edge_agent" / "detectors")
        if not built:
            print("build_native: mypyc wrote no library", file=sys.stderr)
            return 1
        native.remove_build(here)
        for lib in built:
            shutil.copy2(lib, here / lib.name)
    (here / native.DIGEST_NAME).write_text(digest + "\n")
    # Check it in a fresh interpreter: the library loads, and is the one chosen.
    check = subprocess.run([sys.executable, "-c", "from edge_agent.detectors import native; print(native.STATUS)"],
                           cwd=REPO, capture_output=True, text=True)
    status = check.stdout.strip() or check.stderr.strip()[-400:]
    print(f"robust: {status}")
    return 0 if status.startswith("compiled") else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the build is current")
    return build(ap.parse_args().force)


if __name__ == "__main__":
    sys.exit(main())
