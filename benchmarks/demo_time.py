"""Time `make demo` end to end on a fresh clone: venv creation, install, training, export, report.

    python benchmarks/demo_time.py            # clones this checkout into a temporary folder

Writes results/demo_time.md with the wall time of each phase (install = `make install`, demo = the rest).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, header


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("a") as f:
        subprocess.run(cmd, cwd=cwd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS / "demo_time.md"))
    a = ap.parse_args()
    data = os.environ.get("MEDLITE_DATA") or str(ROOT.parent.parent / "shared" / "data")
    with tempfile.TemporaryDirectory(prefix="medlite-demo-") as tmp:
        clone = Path(tmp) / "medlite"
        subprocess.run(["git", "clone", "-q", str(ROOT.parent), str(clone)], check=True)
        log = Path(tmp) / "log.txt"
        env_cmd = ["env", f"MEDLITE_DATA={data}", "make"]
        install = timed([*env_cmd, "install"], clone, log)
        demo = timed([*env_cmd, "demo"], clone, log)
        report = (clone / "demo_run" / "demo_report.md").read_text()
    lines = header("`make demo` on a fresh clone")
    lines += ["| phase | wall time |", "|---|---|", f"| make install (venv + pip) | {install / 60:.1f} min |",
              f"| demo (train, evaluate, export, time) | {demo / 60:.1f} min |",
              f"| total | {(install + demo) / 60:.1f} min |", "",
              "Target: under 15 minutes on 2 CPU cores.", "", "The demo's report:", "",
              report.replace("# ", "### ", 1)]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
