"""The CPUs a worker sizes ONNX Runtime's threads by (`knowledge.cpus`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge import cpus
from knowledge.cpus import cgroup_quota, usable_cpus


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process allowed on eight CPUs of a bigger machine."""
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)


@pytest.mark.usefixtures("eight_cpus")
def test_the_cpus_are_those_the_process_may_run_on_not_the_machine_s(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path) == 8  # no cpu.max: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == 8


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("1600000 100000", 8)],
)
def test_a_container_s_cpu_limit_caps_them(tmp_path: Path, cpu_max: str, expected: int) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert usable_cpus(tmp_path) == expected


@pytest.mark.parametrize("text", ["", "garbage", "100000", "0 100000", "-1 100000", "1 0"])
def test_an_unreadable_or_odd_limit_is_no_limit(tmp_path: Path, text: str) -> None:
    (tmp_path / "cpu.max").write_text(text)
    assert cgroup_quota(tmp_path / "cpu.max") is None
    assert cgroup_quota(tmp_path / "missing") is None
    assert usable_cpus(tmp_path) >= 1
