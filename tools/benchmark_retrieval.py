"""Time and peak memory of covr's chunked top-K against the naive full-matrix sort.

    python tools/benchmark_retrieval.py            # CIRCO size (800 x 123k) and 1M gallery, E = 256
    python tools/benchmark_retrieval.py --quick    # 10x smaller, for a smoke run

Random L2-normalised fp32 embeddings on CPU, top-50. Each measurement runs in its own subprocess:
after the embeddings are made, the process's peak-RSS counter is reset (/proc/self/clear_refs)
and the reported memory is the peak resident set above that baseline (VmHWM - VmRSS), i.e. what
ranking itself needs on top of the embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from covr.eval.topk import topk_faiss, topk_similarity  # noqa: E402
from covr.tools import HelpFormatter  # noqa: E402

CASES = {"circo": (800, 123_403), "1m": (1_000, 1_000_000)}
K = 50
# The full 1000 x 1M argsort needs ~16 GB (scores + int64 indices + sorted copy) and minutes on 2 cores.
SKIP = {
    ("1m", "naive-argsort"): "skipped: ~16 GB and several minutes (1e9-element sort); naive-topk shows the full-matrix cost"
}


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _embeddings(n: int, dim: int, seed: int) -> torch.Tensor:
    """[n, dim] random unit vectors, generated in chunks so making them costs no extra peak."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for start in range(0, n, 65536):
        block = torch.randn(min(65536, n - start), dim, generator=generator)
        out[start : start + block.shape[0]] = torch.nn.functional.normalize(block, dim=1)
    return out


def _rank(method: str, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Top-K gallery indices [Bq, K] by the given method (modules already imported)."""
    if method == "covr":
        return topk_similarity(query, gallery, K)[1]
    if method == "naive-topk":
        return (query @ gallery.T).topk(K, dim=1).indices
    if method == "naive-argsort":
        return (query @ gallery.T).argsort(dim=1, descending=True)[:, :K]
    if method == "faiss-flat":
        return topk_faiss(query, gallery, K)[1]
    raise ValueError(f"unknown method {method!r}")


def worker(case: str, method: str, scale: float, dim: int, repeat: int = 1) -> dict:
    """Run one measurement in this process and return its figures."""
    if method == "faiss-flat":
        import faiss  # noqa: F401  (imported before the baseline: import cost is not ranking cost)
    num_queries, num_gallery = CASES[case]
    num_queries, num_gallery = max(1, int(num_queries * scale)), max(K, int(num_gallery * scale))
    query, gallery = _embeddings(num_queries, dim, 0), _embeddings(num_gallery, dim, 1)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    baseline = _status("VmRSS")
    times = []
    for _ in range(repeat):  # report the fastest run: other processes may share the cores
        start = time.perf_counter()
        indices = _rank(method, query, gallery)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    peak = _status("VmHWM") - baseline
    # the set of each row's top-K (torch.topk orders exact ties arbitrarily; covr puts the lower index first)
    digest = hashlib.sha1(indices.to(torch.int64).sort(dim=1).values.contiguous().numpy().tobytes()).hexdigest()[:10]
    return {"seconds": seconds, "peak_mb": peak / 2**20, "data_mb": (query.nbytes + gallery.nbytes) / 2**20,
            "reset": reset, "digest": digest, "shape": [num_queries, num_gallery]}  # fmt: skip


def measure(case: str, method: str, scale: float, dim: int, timeout: float, repeat: int = 1) -> dict:
    """Run `worker` in a fresh subprocess (clean peak-memory counter)."""
    command = [sys.executable, __file__, "--worker", case, method]
    command += ["--scale", str(scale), "--dim", str(dim), "--repeat", str(repeat)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"error": f"failed (exit {done.returncode}): {last[:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x smaller cases")
    parser.add_argument("--scale", type=float, default=None, help="multiply case sizes (default 1; 0.1 with --quick)")
    parser.add_argument("--dim", type=int, default=256, help="embedding width")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=1, help="time the fastest of N runs (peak memory covers all)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if args.worker:
        print(json.dumps(worker(*args.worker, scale, args.dim, args.repeat)))
        return

    methods = ["covr", "naive-topk", "naive-argsort"]
    try:
        import faiss  # noqa: F401

        methods.append("faiss-flat")
    except ImportError:
        pass
    threads = torch.get_num_threads()
    print(f"top-{K}, E = {args.dim}, fp32, CPU, {threads} threads; memory = peak RSS above the embeddings", flush=True)
    print(f"{'case':<22}{'method':<16}{'time (s)':>10}{'peak MB':>10}  {'result':<14}notes")
    for case in CASES:
        figures = {}
        for method in methods:
            if (case, method) in SKIP and scale >= 1.0:
                figures[method] = {"error": SKIP[(case, method)]}
            else:
                figures[method] = measure(case, method, scale, args.dim, args.timeout, args.repeat)
        for method, f in figures.items():
            label = f"{f['shape'][0]} x {f['shape'][1]:,}" if "shape" in f else case
            if "error" in f:
                print(f"{label:<22}{method:<16}{'-':>10}{'-':>10}  {'':<14}{f['error']}", flush=True)
                continue
            same = "same top-K" if f["digest"] == figures["covr"].get("digest") else f["digest"]
            note = f"embeddings {f['data_mb']:.0f} MB" + ("" if f["reset"] else "; peak counter not resettable")
            same = same if method != "covr" else ""
            print(f"{label:<22}{method:<16}{f['seconds']:>10.2f}{f['peak_mb']:>10.0f}  {same:<14}{note}", flush=True)
        covr = figures["covr"]
        for method in ("naive-topk", "naive-argsort"):
            f = figures.get(method, {})
            if "error" not in f and "error" not in covr and f:
                print(f"{'':<22}{method} / covr: time x{f['seconds'] / covr['seconds']:.2f}, "
                      f"peak memory x{f['peak_mb'] / max(covr['peak_mb'], 1):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
