"""One efficiency point, measured in its own process under a time and a memory budget.

A point is (model, L, B, D, device, phase). `run_point` starts `python -m bench.point` with the
point's spec as JSON, watches the child, and returns one flat row for the sweep table. Running
every point in a fresh process keeps the peak resident memory of one point free of what earlier
points left in the allocator, and lets a point that runs away be killed without losing the sweep.

Budgets:
- time: the whole child, from start (including the torch import) to exit, must finish within
  `time_budget_s`. A child that takes longer is killed, and the row's status is "timeout".
- memory: the child's resident memory must stay within `memory_budget_bytes`. The parent polls the
  child's RSS and kills it when it exceeds the budget. On CPU the child also caps its own address
  space (RLIMIT_AS) at the budget plus the address space it already maps, so an allocation that
  would grow past the budget fails inside torch before the parent notices. On CUDA the child caps
  the caching allocator at the same number of bytes of device memory. Any of these gives "oom".

Row statuses written here: measured, oom, timeout, error. The sweep adds skipped and estimated.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from convrec.errors import ConvbenchError

logger = logging.getLogger(__name__)

PHASES = ("train", "infer")
STATUSES = ("measured", "estimated", "skipped", "oom", "timeout", "error")

# Substrings of the messages torch raises when an allocation fails: the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory") and the CUDA caching allocator
# ("CUDA out of memory").
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")

# Address space that each thread may map without using it: a glibc malloc arena, which reserves
# HEAP_MAX_SIZE = 2 * DEFAULT_MMAP_THRESHOLD_MAX = 64 MiB on 64-bit systems, and a stack of
# RLIMIT_STACK bytes. When RLIMIT_STACK is unlimited, the stack is assumed to take at most 32 MiB.
_MALLOC_ARENA_BYTES = 64 * 1024**2
_UNLIMITED_STACK_BYTES = 32 * 1024**2

# Lines of the child's standard error kept in the reason of an "error" row.
_STDERR_TAIL_LINES = 5


@dataclass(frozen=True)
class PointSpec:
    """One point of the sweep: which model, at which sizes, on which device, in which phase."""

    model: str
    seq_len: int
    batch_size: int
    hidden_size: int
    phase: str
    device: str = "cpu"
    # Candidates scored per user: the held-out item plus 100 negatives, as in evaluation.
    num_candidates: int = 101
    # Untimed and timed steps of `time_point`; not part of the point's identity.
    warmup: int = 2
    repeats: int = 5

    def key(self) -> tuple:
        return (self.model, self.phase, self.seq_len, self.batch_size, self.hidden_size,
                self.device)

    def describe(self) -> str:
        return (f"{self.model} {self.phase} L={self.seq_len} B={self.batch_size} "
                f"D={self.hidden_size} on {self.device}")


def run_point(spec: PointSpec, *, time_budget_s: float, memory_budget_bytes: int,
              poll_interval_s: float = 0.05) -> dict:
    """Measure `spec` in a child process and return its row.

    The row has the spec's fields, `method` "measure", `status`, `reason` (empty when measured),
    `process_seconds` (child wall time seen by the parent) and, when measured, the timing,
    deterministic and memory columns plus `prov_*` provenance columns.
    """
    if spec.phase not in PHASES:
        raise ConvbenchError(f"unknown phase {spec.phase!r}; valid phases are: "
                             f"{', '.join(PHASES)}")

    row = {**asdict(spec), "method": "measure"}
    with tempfile.TemporaryDirectory(prefix="convbench-point-") as scratch:
        spec_path = Path(scratch) / "spec.json"
        result_path = Path(scratch) / "result.json"
        stderr_path = Path(scratch) / "stderr.txt"
        spec_path.write_text(json.dumps({"spec": asdict(spec),
                                         "memory_budget_bytes": int(memory_budget_bytes)}))

        command = [sys.executable, "-m", "bench.point", str(spec_path), str(result_path)]
        started = time.perf_counter()
        with open(stderr_path, "wb") as stderr:
            # A new session makes the child the leader of its own process group, so a kill also
            # reaches anything it started.
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=stderr,
                                     start_new_session=True)
            try:
                verdict = _watch(child, time_budget_s=time_budget_s,
                                 memory_budget_bytes=memory_budget_bytes,
                                 poll_interval_s=poll_interval_s)
            except BaseException:
                # The child runs in its own session, so Ctrl-C does not reach it: end it here.
                _kill(child)
                raise
        row["process_seconds"] = time.perf_counter() - started

        if verdict is not None:
            row.update(verdict)
        elif result_path.exists():
            row.update(json.loads(result_path.read_text()))
        else:
            row.update(_classify_crash(child.returncode, stderr_path))

    logger.debug("%s: %s %s", spec.describe(), row["status"], row.get("reason", ""))
    return row


def _watch(child: subprocess.Popen, *, time_budget_s: float, memory_budget_bytes: int,
           poll_interval_s: float) -> dict | None:
    """Wait for `child`, killing it over budget; return the row fields of a kill, else None."""
    deadline = time.monotonic() + time_budget_s
    try:
        process = psutil.Process(child.pid)
    except psutil.NoSuchProcess:  # the child already exited and was reaped
        child.wait()
        return None
    while child.poll() is None:
        if time.monotonic() > deadline:
            _kill(child)
            return {"status": "timeout",
                    "reason": f"exceeded the time budget of {time_budget_s:g} s"}
        rss = _tree_rss(process)
        if rss > memory_budget_bytes:
            _kill(child)
            return {"status": "oom",
                    "reason": f"resident memory {rss} B exceeded the budget of "
                              f"{memory_budget_bytes} B"}
        time.sleep(poll_interval_s)
    return None


def _tree_rss(process: psutil.Process) -> int:
    """Return the summed RSS of `process` and its descendants; 0 for those that already exited."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _classify_crash(returncode: int, stderr_path: Path) -> dict:
    """Turn a child that exited without writing a result into row fields."""
    lines = stderr_path.read_text(errors="replace").strip().splitlines()
    tail = " | ".join(lines[-_STDERR_TAIL_LINES:])
    if returncode == -signal.SIGKILL:
        # Nothing here sent the signal, so the kernel's out-of-memory killer is the usual cause.
        return {"status": "oom", "reason": f"killed by SIGKILL, most likely by the kernel's "
                                           f"out-of-memory killer; {tail}"}
    return {"status": "error", "reason": f"point process exited with code {returncode}; {tail}"}


def is_out_of_memory(error: BaseException) -> bool:
    """Return whether `error` is an allocation failure of Python, the CPU or the CUDA allocator."""
    if isinstance(error, MemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(text in message for text in _OOM_MESSAGES)


def measure_here(spec: PointSpec, memory_budget_bytes: int) -> dict:
    """Measure `spec` in the current process; this is what the child of `run_point` runs.

    Returns the row fields: status "measured" with the measured columns, or "oom" or "error" with
    a reason.
    """
    import torch

    from bench.measure import measure_deterministic, provenance, time_point

    process = psutil.Process()
    sizes = dict(seq_len=spec.seq_len, batch_size=spec.batch_size,
                 hidden_size=spec.hidden_size, phase=spec.phase,
                 num_candidates=spec.num_candidates, device=spec.device)
    on_cuda = spec.device.startswith("cuda")
    base_rss = process.memory_info().rss
    _limit_memory(spec.device, memory_budget_bytes, base_rss)

    started = time.perf_counter()
    try:
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(spec.device)
        timing = time_point(spec.model, warmup=spec.warmup, repeats=spec.repeats, **sizes)
        cuda_peak = torch.cuda.max_memory_allocated(spec.device) if on_cuda else None
        deterministic = measure_deterministic(spec.model, **sizes)
    except Exception as error:  # every failure of a point becomes its row
        status = "oom" if is_out_of_memory(error) else "error"
        if status == "error":
            traceback.print_exc(file=sys.stderr)
        return {"status": status, "reason": f"{type(error).__name__}: {error}".strip()}
    measure_seconds = time.perf_counter() - started

    peak_rss = _peak_rss_bytes(process)
    row = {
        "status": "measured",
        "reason": "",
        "measure_seconds": measure_seconds,
        "time_median_s": timing["time_median_s"],
        "time_iqr_s": timing["time_iqr_s"],
        "time_min_s": timing["time_min_s"],
        "time_max_s": timing["time_max_s"],
        "params": deterministic["params"],
        "flops": deterministic["flops"],
        "saved_bytes": deterministic["saved_bytes"],
        "peak_live_bytes": deterministic["peak_live_bytes"],
        "base_rss_bytes": base_rss,
        "peak_rss_bytes": peak_rss,
        "rss_growth_bytes": max(peak_rss - base_rss, 0),
        "cuda_peak_bytes": cuda_peak,
    }
    row.update({f"prov_{key}": value for key, value in provenance().items()})
    return row


def _limit_memory(device: str, memory_budget_bytes: int, base_rss: int) -> None:
    """Make allocations past the budget fail inside torch, so they surface as "oom"."""
    if device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
        if memory_budget_bytes < total:
            torch.cuda.set_per_process_memory_fraction(memory_budget_bytes / total, device)
        return

    try:
        import resource
    except ImportError:  # not POSIX: the parent's RSS watch is the only limit
        return
    # The address space already mapped may be far larger than the RSS, so the limit is that
    # size plus what is left of the budget over the current RSS.
    headroom = memory_budget_bytes - base_rss
    if headroom <= 0:
        raise MemoryError(f"the point process already uses {base_rss} B before measuring, "
                          f"over the memory budget of {memory_budget_bytes} B")
    # Threads that torch starts later map address space that is mostly never resident. Reserving
    # it per thread keeps the limit from failing a point on a many-core machine long before its
    # RSS nears the budget.
    # NOTE: the reserve assumes glibc; the parent's RSS watch enforces the budget either way.
    import torch

    stack, _ = resource.getrlimit(resource.RLIMIT_STACK)
    stack = stack if stack != resource.RLIM_INFINITY else _UNLIMITED_STACK_BYTES
    threads = torch.get_num_threads() + torch.get_num_interop_threads()
    reserve = threads * (stack + _MALLOC_ARENA_BYTES)
    limit = psutil.Process().memory_info().vms + headroom + reserve
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _peak_rss_bytes(process: psutil.Process) -> int:
    """Return the peak resident memory of this process so far, in bytes."""
    try:
        import resource
    except ImportError:
        # Windows reports the peak working set; elsewhere psutil has no peak.
        info = process.memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _child_main(spec_path: str, result_path: str) -> int:
    request = json.loads(Path(spec_path).read_text())
    spec = PointSpec(**request["spec"])
    try:
        row = measure_here(spec, request["memory_budget_bytes"])
    except MemoryError as error:
        row = {"status": "oom", "reason": str(error)}
    # Written through a temporary name, so the parent never reads half a file after a kill.
    temporary = Path(result_path + ".tmp")
    temporary.write_text(json.dumps(row, default=str))
    os.replace(temporary, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:3]))
