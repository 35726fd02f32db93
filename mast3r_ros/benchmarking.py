"""Benchmarks you can trust: repeated timings with min / median / max, the machine's state
before and after (load average, threads, CPU), and a warning when the machine was busy.

Every benchmark of the package (``mast3r-ros bench``, ``bench-match``, ``benchmarks/*.py``)
reports through this module, so RESULTS.md rows always say under what load they were taken.
Headline figures are ratios against a baseline timed in the same run, interleaved round by
round (``interleaved``), which survives a noisy machine far better than absolute times.
"""
from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

#: load average per core above which a run is flagged as taken on a busy machine
BUSY_LOAD_PER_CORE = 0.5


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated runs of one thing, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    def summary(self) -> dict[str, float]:
        """{'min_ms', 'median_ms', 'max_ms', 'runs'} rounded for printing."""
        return {"min_ms": round(self.min_ms, 3), "median_ms": round(self.median_ms, 3),
                "max_ms": round(self.max_ms, 3), "runs": len(self.samples_ms)}

    def __str__(self) -> str:
        return f"{self.median_ms:.1f} ms (min {self.min_ms:.1f}, max {self.max_ms:.1f}, n={len(self.samples_ms)})"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class MachineState:
    """Load and resources around a benchmark run."""

    cpu: str = field(default_factory=_cpu_name)
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    torch_threads: int | None = None
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] | None = None

    @classmethod
    def now(cls) -> "MachineState":
        threads = None
        try:
            import torch

            threads = torch.get_num_threads()
        except ModuleNotFoundError:
            pass
        return cls(torch_threads=threads, load_before=_loadavg())

    def finish(self) -> "MachineState":
        self.load_after = _loadavg()
        return self

    @property
    def busy(self) -> bool:
        """True when the 1-minute load before or after exceeded BUSY_LOAD_PER_CORE per core."""
        loads = [self.load_before[0]] + ([self.load_after[0]] if self.load_after else [])
        return max(loads) > BUSY_LOAD_PER_CORE * self.cores

    def report(self) -> dict:
        d = asdict(self)
        d["busy"] = self.busy
        return d

    def warn_if_busy(self, printer: Callable[[str], None] | None = None) -> None:
        if self.busy:
            msg = (f"WARNING: machine busy during the benchmark (load average "
                   f"{self.load_before[0]:.2f} before, "
                   f"{self.load_after[0] if self.load_after else float('nan'):.2f} after, "
                   f"{self.cores} cores): absolute times are unreliable, trust ratios only")
            (printer or log.warning)(msg)


def _loadavg() -> tuple[float, float, float]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return (0.0, 0.0, 0.0)


def time_fn(fn: Callable[[], object], *, runs: int = 5, warmup: int = 1,
            sync: Callable[[], None] | None = None,
            iterate: Callable[[range], Iterable[int]] | None = None) -> Timing:
    """Time ``fn()`` ``runs`` times after ``warmup`` untimed calls (``sync`` e.g. CUDA's).

    ``iterate`` may wrap the timed range, e.g. in a progress bar.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in (iterate or iter)(range(runs)):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(1e3 * (time.perf_counter() - t0))
    return Timing(tuple(out))


def interleaved(fns: Sequence[Callable[[], object]], *, rounds: int = 5, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> list[Timing]:
    """Time several variants round-robin (A B C A B C ...), so load changes hit all alike.

    Returns one ``Timing`` per function; compare medians (``ratio``).
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {rounds}, {warmup}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync()
            samples[i].append(1e3 * (time.perf_counter() - t0))
    return [Timing(tuple(s)) for s in samples]


def ratio(baseline: Timing, candidate: Timing) -> float:
    """Speed-up of ``candidate`` over ``baseline`` (median over median; > 1 = faster)."""
    return baseline.median_ms / candidate.median_ms
