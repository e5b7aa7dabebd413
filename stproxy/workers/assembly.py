"""
The wiring of a supervisor (C{--workers N}, N > 1), as
L{stproxy.assembly.assemble} wires a single stproxy, or one worker.

The tree::

    SupervisorService                 stproxy.workers.supervisor
      listener-N    one per --listen  held for the workers (stproxy.workers.binding)
      redirect-http                   only with --redirect-http
      admin         admin listener    only with --admin (stproxy.workers.admin)
    WorkerPool                        the workers (stproxy.workers.pool)

Each worker is C{python -m stproxy} with the supervisor's own flags, then
C{--workers 1 --worker SPEC} (L{stproxy.workers.flags.WorkerSpec}); later
flags win, so the worker serves one process's worth with everything else
alike.  Nothing is bound or started here.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import Factory

from stproxy.config import Config, ConfigError
from stproxy.edge.listeners import AnnouncedEndpoint, listeningService
from stproxy.ops.logs import publisherAt
from stproxy.reactor import ProxyReactor
from stproxy.routing.affinity import randomSecret
from stproxy.service import PUBLIC_LISTENER_PREFIX, REDIRECT_LISTENER
from stproxy.workers.admin import supervisorAdminSite
from stproxy.workers.binding import Binder, heldEndpoint
from stproxy.workers.control import CONTROL_FD
from stproxy.workers.flags import SECRET_ENV, WorkerSettings, WorkerSpec
from stproxy.workers.metrics import SupervisorMetrics
from stproxy.workers.pool import WorkerPool
from stproxy.workers.supervisor import SupervisorService


def workerCommand(arguments: Sequence[str], spec: WorkerSpec) -> list[str]:
    """The command line of one worker: this Python, C{-m stproxy}, the flags, its spec."""
    return [
        sys.executable,
        "-m",
        "stproxy",
        *arguments,
        "--workers",
        "1",
        "--worker",
        spec.argument(),
    ]


def supervise(
    config: Config,
    settings: WorkerSettings,
    arguments: Sequence[str],
    reactor: ProxyReactor,
    ownsProcess: bool = True,
) -> SupervisorService:
    """
    Build a supervisor of C{settings.count} workers.

    @param arguments: the flags this process was given, which each worker gets too.
    @param ownsProcess: C{False} for an embedding program, which cannot have
        workers: a supervisor owns its process's signals and children.
    @raise ConfigError: when C{ownsProcess} is false.
    """
    if not ownsProcess:
        raise ConfigError("--workers needs a process of its own: twistd stproxy, python -m stproxy")
    log = publisherAt(config.logging.level, config.logging.format)
    binder = Binder()
    listeners = [
        (f"{PUBLIC_LISTENER_PREFIX}{number}", description, description)
        for number, description in enumerate(config.listen)
    ]
    if config.tls.redirect is not None:
        redirect = config.tls.redirect
        listeners.append((REDIRECT_LISTENER, redirect, f"{redirect}, redirecting to HTTPS"))
    endpoints = [
        AnnouncedEndpoint(heldEndpoint(binder, description), label, log)
        for _, description, label in listeners
    ]
    inherited = tuple(range(CONTROL_FD + 1, CONTROL_FD + 1 + len(listeners)))

    def command(index: int) -> list[str]:
        return workerCommand(arguments, WorkerSpec(index, CONTROL_FD, inherited))

    environment = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    if config.replicas.secret is None:  # one affinity key for every worker
        environment[SECRET_ENV] = randomSecret().hex()
    metrics = SupervisorMetrics(settings.count)
    pool = WorkerPool(
        settings.count,
        IReactorProcess(reactor),
        reactor,
        command,
        environment,
        lambda: service.listeningDescriptors(),
        log,
        metrics.restarted,
    )
    service = SupervisorService(
        reactor, pool, metrics, endpoints, config.operations.shutdownTimeout, log, ownsProcess
    )
    for (name, _, _), endpoint in zip(listeners, endpoints):
        listeningService(endpoint, Factory(), name).setServiceParent(service)
    admin = config.operations.admin
    if admin is not None:
        endpoint = AnnouncedEndpoint(
            serverFromString(reactor, admin),
            admin,
            log,
            message="stproxy admin endpoint on {where} ({description})",
        )
        site = supervisorAdminSite(service.exposition, service.ready, reactor, log)
        listeningService(endpoint, site, "admin").setServiceParent(service)
    return service


__all__ = ["supervise", "workerCommand"]
