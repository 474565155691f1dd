"""How wide is the 95% interval of the added startup that verification reports? (issue 10)

    python3 benchmarks/verify_interval.py [--repeats N] [--runs N] [--json FILE] [BINARY...]

For each binary (default: the hello-go fixture, built by testdata/build.py) and each of "stripped" and
"UPX-packed" (binslim's default NRV), runs ``binslim BINARY -o OUT [--upx] --verify-runs RUNS --json`` REPEATS
times and prints the added startup (mean of the paired differences) and its interval's width, one line per
run, then the median width. Widths depend on the machine's load: say how busy it was when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from testdata.build import build_all  # noqa: E402

RUN_TIMEOUT = 600.0


def measure(binary: str, upx: bool, runs: int, folder: str) -> dict[str, Any]:
    out = os.path.join(folder, "out")
    argv = [sys.executable, "-m", "binslim", binary, "-o", out, "--verify-runs", str(runs), "--json"]
    if upx:
        argv.append("--upx")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"binslim failed on {binary} (exit {done.returncode}): {done.stderr.strip()}")
    os.unlink(out)
    entry = json.loads(done.stdout)["results"][0]
    startup = entry["verify"]["startup_ms"]
    if startup is None or startup["added_low"] is None:
        raise SystemExit(f"{binary}: startup not measured: {entry['verify']['reason']}")
    return {
        "packed": entry["upx"] is not None,
        "added_ms": startup["added"],
        "low_ms": startup["added_low"],
        "high_ms": startup["added_high"],
        "width_ms": round(startup["added_high"] - startup["added_low"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="*", metavar="BINARY")
    parser.add_argument("--repeats", type=int, default=3, help="binslim runs per binary and mode (default 3)")
    parser.add_argument("--runs", type=int, default=9, help="--verify-runs for each (default 9)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    options = parser.parse_args()
    binaries = options.binaries or [build_all(REPO_ROOT / "build" / "fixtures")["hello-go"].path]
    report: dict[str, Any] = {
        "schema": 1,
        "runs": options.runs,
        "load_before": os.getloadavg(),
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="binslim-bench-interval-") as folder:
        for binary in binaries:
            for upx in (False, True):
                widths = []
                for _ in range(options.repeats):
                    figures = measure(binary, upx, options.runs, folder)
                    widths.append(figures["width_ms"])
                    report["results"].append({"binary": binary, "upx": upx, **figures})
                    interval = f"({figures['low_ms']:.2f} to {figures['high_ms']:.2f})"
                    print(
                        f"{os.path.basename(binary)} {'upx' if upx else 'stripped'}: added"
                        f" {figures['added_ms']:+.2f} ms {interval}, width {figures['width_ms']:.2f} ms"
                    )
                print(f"  median width {statistics.median(widths):.2f} ms over {len(widths)} runs")
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}")
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
