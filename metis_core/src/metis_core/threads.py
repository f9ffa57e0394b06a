"""How many torch threads a process should use on a machine that may be shared.

torch's default (one thread per core) makes small models 4-30× slower when another job shares
the cores; :func:`choose_threads` takes half the idle cores (1 to 4) unless told otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ThreadChoice", "choose_threads"]


@dataclass(frozen=True)
class ThreadChoice:
    """The torch thread count chosen for a run, and why.

    Attributes:
        threads: Threads used.
        cores: CPU cores this process may use.
        load: One-minute load average (busy cores) when chosen.
        reason: One line for the output.
    """

    threads: int
    cores: int
    load: float
    reason: str


def choose_threads(
    requested: int | None = None, *, hint: str = "--threads / TrainConfig.threads"
) -> ThreadChoice:
    """Pick torch threads: ``requested`` if given, else half the idle cores (1 to 4).

    Small models such as ``motion_rvq`` gain little from more threads and lose 4-30× when their
    threads compete with other work for the cores; half the idle cores keeps clear of that.

    Args:
        requested: An explicit count (``--threads``); ``None`` to choose.
        hint: How the user sets the count, for the reason line.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        load = float(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        load = 0.0
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be an integer >= 1, got {requested!r}")
        plural = "s" if requested > 1 else ""
        return ThreadChoice(requested, cores, load, f"{requested} torch thread{plural} (as asked)")
    idle = max(0.0, cores - load)
    threads = max(1, min(4, int(idle // 2)))
    return ThreadChoice(
        threads,
        cores,
        load,
        f"{threads} torch thread{'s' if threads > 1 else ''} ({cores} cores, load {load:.1f}: "
        f"half the idle cores, 1-4; set {hint} to change)",
    )
