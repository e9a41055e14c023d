"""Time and peak memory of re-scoring the whole gallery inside covr's chunked top-K (covr.eval.rerank):
SoFT, a bilinear fusion (Paracosm / CVSI) and XR's rank fusion, against the plain top-K.

    python tools/benchmark_rescoring.py            # CIRCO size: 800 queries x 123,403 images, E = 256
    python tools/benchmark_rescoring.py --quick    # 10x smaller, for a smoke run

Random L2-normalised fp32 embeddings on CPU, top-50, XR with 4 descriptions per query and no
verification. Each case runs in its own subprocess; memory is the peak resident set above the
baseline after the inputs are made (VmHWM - VmRSS, as tools/benchmark_retrieval.py measures it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from covr.eval.rerank import BilinearRescorer, SoftRescorer, XRRescorer  # noqa: E402
from covr.eval.topk import topk_similarity  # noqa: E402
from covr.tools import HelpFormatter  # noqa: E402

METHODS = ("plain", "soft", "bilinear", "xr")
K, DIM, VARIANTS = 50, 256, 4


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def measure(method: str, queries: int, gallery: int) -> dict:
    """One case in this process -> {seconds, peak_mb}."""
    torch.set_num_threads(2)
    q, g = _unit(queries, DIM, seed=0), _unit(gallery, DIM, seed=1)
    rescore = {
        "plain": None,
        "soft": SoftRescorer(_unit(queries, DIM, seed=2), _unit(queries, DIM, seed=3), g),
        "bilinear": BilinearRescorer(_unit(queries, DIM, seed=2), _unit(gallery, DIM, seed=3)),
        "xr": XRRescorer(_unit(queries, VARIANTS, DIM, seed=2), torch.ones(queries, VARIANTS, dtype=torch.bool), g, _unit(gallery, DIM, seed=3), None),
    }[method]
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
    base = _status("VmRSS")
    start = time.perf_counter()
    topk_similarity(q, g, K, rescore=rescore)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "peak_mb": round((_status("VmHWM") - base) / 2**20)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_rescoring.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x fewer queries and gallery items")
    parser.add_argument("--case", nargs=3, metavar=("METHOD", "QUERIES", "GALLERY"), help=argparse.SUPPRESS)  # a subprocess's own case
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(measure(args.case[0], int(args.case[1]), int(args.case[2]))))
        return 0
    queries, gallery = (80, 12_340) if args.quick else (800, 123_403)
    print(f"{queries} queries x {gallery:,} gallery, E = {DIM}, top-{K}, fp32 CPU")
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--case", method, str(queries), str(gallery)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        print(f"{method:9s} {result['seconds']:7.2f} s  {result['peak_mb']:6d} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
