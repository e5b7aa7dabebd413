"""
--workers and the worker's --worker spec (stproxy.workers.flags), parsed as twistd parses
them, without exiting on a usage error.
"""

from __future__ import annotations

import pytest
from option_parsing import parse
from twisted.python import usage

from stproxy.workers.flags import (
    MAX_WORKERS,
    SECRET_ENV,
    WorkerSettings,
    WorkerSpec,
    publicListeners,
)


def test_one_process_by_default() -> None:
    """Without --workers, stproxy is one process, neither supervisor nor worker."""
    processes = parse().processes
    assert processes == WorkerSettings(count=1, worker=None)
    assert not processes.supervises


def test_workers_makes_a_supervisor() -> None:
    """--workers 4 makes this process supervise four workers."""
    processes = parse("--workers", "4").processes
    assert processes.count == 4 and processes.supervises


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "two", "", "²", str(MAX_WORKERS + 1)])
def test_a_bad_worker_count_is_refused_in_one_line(value: str) -> None:
    """--workers takes a whole number of processes from 1 to MAX_WORKERS, nothing else."""
    with pytest.raises(usage.UsageError) as raised:
        parse("--workers", value)
    assert str(raised.value) == (
        f"--workers {value}: must be a whole number of processes, 1 to {MAX_WORKERS}"
    )


def test_the_command_line_is_kept_for_the_workers() -> None:
    """The flags as given are kept, for the supervisor to give its workers."""
    argv = ["--workers", "2", "--listen", "tcp:0", "-u", "st:8501"]
    assert parse(*argv).arguments == argv


def test_a_worker_reads_its_spec_and_the_shared_key() -> None:
    """--worker INDEX:CONTROL:FDS, and the affinity key from the environment, in hexadecimal."""
    processes = parse(
        "--workers", "1", "--worker", "1:3:4,5", "--listen", "tcp:1", "--listen", "tcp:2",
        environ={SECRET_ENV: "6b" * 32},
    ).processes  # fmt: skip
    assert processes.worker == WorkerSpec(1, 3, (4, 5), b"k" * 32)
    assert not processes.supervises


def test_a_worker_spec_says_itself() -> None:
    """A spec's argument is what --worker reads back (the key apart)."""
    spec = WorkerSpec(7, 3, (4, 5, 6), b"secret")
    assert spec.argument() == "7:3:4,5,6"
    assert WorkerSpec.parse(spec.argument(), {}) == WorkerSpec(7, 3, (4, 5, 6))


@pytest.mark.parametrize("text", ["x", "1", "1:3", "1:3:a", "1:3:4,"])
def test_a_malformed_worker_spec_is_refused(text: str) -> None:
    """--worker that is not INDEX:CONTROL:FD,FD... is a usage error (it is set by --workers)."""
    with pytest.raises(usage.UsageError, match="--worker"):
        parse("--worker", text)


def test_a_shared_key_that_is_not_hexadecimal_is_refused() -> None:
    """A key in the environment that is not hexadecimal is named in the error."""
    with pytest.raises(usage.UsageError, match=SECRET_ENV):
        parse("--worker", "0:3:4", environ={SECRET_ENV: "zz"})


def test_public_listeners_are_every_listen_then_the_redirect(pki) -> None:
    """What the supervisor binds: each --listen in order, then --redirect-http; not --admin."""
    config = parse(
        "--listen", "ssl:0", *pki.server_args(), "--listen", "tcp:0",
        "--redirect-http", "tcp:80", "--admin", "tcp:9100",
    ).config  # fmt: skip
    assert publicListeners(config) == ("ssl:0", "tcp:0", "tcp:80")
