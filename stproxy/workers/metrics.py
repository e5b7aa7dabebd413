"""
The supervisor's C{/metrics}: every worker's metrics in one exposition,
each sample labelled with its worker, and the supervisor's own.

Each worker counts on its own (L{stproxy.ops.metrics.Metrics}); the
supervisor asks each for its exposition (L{stproxy.workers.control}) and
merges them with L{mergeExpositions}: one C{HELP} and C{TYPE} per family,
then the family's samples from worker 0, worker 1..., each with
C{worker="N"} as its first label.  Prometheus sums them with
C{sum without (worker) (...)}.  A counter starts again from 0 when its
worker is restarted, which C{rate()} takes as a counter reset.
"""

from __future__ import annotations

import re
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

#: A sample line's metric name, then C{{} or a space.
_SAMPLE = re.compile(rb"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{\}?|[ \t])")

#: A C{# HELP name ...} or C{# TYPE name ...} line.
_HEADER = re.compile(rb"# (?:HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?:[ \t]|$)")


def labelled(line: bytes, label: bytes) -> bytes:
    """
    The sample C{line} with C{label} (C{worker="0"}) as its first label;
    any other line as it is.
    """
    match = _SAMPLE.match(line)
    if match is None:
        return line
    name, after = match.groups()
    rest = line[match.end() :]
    if after == b"{}":
        return name + b"{" + label + b"}" + rest
    if after == b"{":
        return name + b"{" + label + b"," + rest
    return name + b"{" + label + b"}" + after + rest


def mergeExpositions(parts: Iterable[tuple[str, bytes]], label: str = "worker") -> bytes:
    """
    One Prometheus text exposition from several, each part's samples
    labelled C{label="NAME"} (NAME, the part's first item, is a worker's
    number).  Families keep the order they first appear in; a family's
    C{HELP} and C{TYPE} come from its first part, its samples from every
    part, in the order of the parts.  Comments other than those are dropped.
    """
    headers: dict[bytes, dict[bytes, bytes]] = {}
    samples: dict[bytes, list[bytes]] = {}
    for name, text in parts:
        value = f'{label}="{_escape(name)}"'.encode("utf-8")
        family: bytes | None = None
        for line in text.splitlines():
            header = _HEADER.match(line)
            if header is not None:
                family = header.group(1)
                samples.setdefault(family, [])
                headers.setdefault(family, {}).setdefault(line[2:6], line)  # HELP, TYPE
            elif line.strip() and not line.startswith(b"#"):
                key = family if family is not None else line.split(b"{")[0].split()[0]
                samples.setdefault(key, []).append(labelled(line, value))
    lines: list[bytes] = []
    for family, familySamples in samples.items():
        lines += headers.get(family, {}).values()
        lines += familySamples
    return b"".join(line + b"\n" for line in lines)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class SupervisorMetrics:
    """
    What the supervisor counts itself.

    @ivar registry: what it exposes, after its workers' metrics.
    """

    def __init__(self, count: int) -> None:
        self.registry = CollectorRegistry()
        self.workers = Gauge(
            "stproxy_workers",
            "Worker processes running now (--workers asks for the number)",
            registry=self.registry,
        )
        self.restarts = Counter(
            "stproxy_worker_restarts",
            "Workers started again after they ended unasked (crashed, or killed)",
            ["worker"],
            registry=self.registry,
        )
        for index in range(count):
            self.restarts.labels(worker=str(index))

    def restarted(self, index: int) -> None:
        """Count a restart of worker C{index}."""
        self.restarts.labels(worker=str(index)).inc()

    def exposition(self) -> bytes:
        """The supervisor's own metrics, in Prometheus text."""
        return generate_latest(self.registry)


__all__ = ["SupervisorMetrics", "labelled", "mergeExpositions"]
