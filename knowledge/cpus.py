"""How many CPUs this process may use, which sizes ONNX Runtime's threads (`OnnxEncoder`).

`os.cpu_count()` counts the machine's CPUs. A worker pinned to some of them (`taskset`,
`--cpuset-cpus`) or in a container with a CPU limit (`docker --cpus`, a Kubernetes CPU limit:
a cgroup v2 ``cpu.max``) may use fewer. Threads beyond those take turns on them, and a pass of
one question slows down: fp32, pinned to one CPU, 6.8 ms with one thread against 9.5 ms with
four (docs/benchmarks.md, "Twelfth round"). Under a CPU limit the extra threads also spend
the quota early and the whole process waits for the next period.

joblib's `cpu_count` does the same, but importing it costs a worker 0.2–0.3 s of start-up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Where cgroup v2 shows a container its own group.
CGROUP = Path("/sys/fs/cgroup")


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), in order; every CPU of the machine
    where the system does not say."""
    affinity = getattr(os, "sched_getaffinity", None)
    return sorted(affinity(0)) if affinity is not None else list(range(os.cpu_count() or 1))


def usable_cpus(cgroup: Path = CGROUP) -> int:
    """How many CPUs this process may run on (`allowed_cpus`), fewer where the cgroup's CPU
    limit allows less (rounded up: 1.5 CPUs make 2); at least 1."""
    cpus = len(allowed_cpus())
    quota = cgroup_quota(cgroup / "cpu.max")
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_quota(path: Path) -> float | None:
    """The CPUs a cgroup v2 ``cpu.max`` allows ("200000 100000": 2.0); None without a limit or
    a readable file."""
    try:
        quota, _, period = path.read_text().strip().partition(" ")
        if quota == "max" or not period:
            return None
        value = int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None
