"""Provenance recorded with every stored result: machine, software, commit and time."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPOSITORY = Path(__file__).resolve().parent.parent


def git_commit(directory: Path = REPOSITORY) -> str | None:
    """Return the checked-out commit, with "+dirty" for uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=directory, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not commit:
        return None
    if status:
        return commit + "+dirty"
    return commit


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """Describe where and when a result was produced: machine, CPU, torch, commit, time, threads.

    `cuda_device` names the GPU when CUDA is available, else it is None. `device` is recorded
    when given.
    """
    record: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_num_threads": torch.get_num_threads(),
    }
    if device is not None:
        record["device"] = str(torch.device(device))
    return record
