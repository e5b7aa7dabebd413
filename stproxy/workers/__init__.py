"""
Several processes serving the same listeners (C{--workers N}), for more
than one core.

One process, the supervisor, binds every public listener and starts N
workers, each a whole stproxy that accepts on the inherited sockets::

    twistd stproxy / python -m stproxy --workers N       the supervisor
      binds the listeners (before privileges drop)       workers/binding
      serves --admin: /metrics of every worker, /readyz  workers/admin, workers/metrics
      starts, watches, restarts the workers              workers/pool, workers/process
      stops them all on SIGTERM                          workers/supervisor
        |  stdin / fd 3: questions, stop, its end        workers/control
        v
    python -m stproxy ... --workers 1 --worker SPEC      each worker
      adopts the sockets, serves as stproxy does         workers/adopt (stproxy.assembly)

  - C{flags}: C{--workers}, and the worker's C{--worker} spec;
  - C{binding}: the supervisor's listening sockets, held, never accepted on;
  - C{adopt}: a worker's listeners, adopted from its supervisor;
  - C{control}: the pipes between them, and the worker's end;
  - C{process}: one worker as the supervisor sees it;
  - C{pool}: the workers: started, restarted with a back-off, stopped;
  - C{supervisor}: the supervisor's root service: bind, start, stop, signals;
  - C{metrics}: the workers' metrics merged, and the supervisor's own;
  - C{admin}: the supervisor's C{/metrics}, C{/healthz}, C{/readyz};
  - C{assembly}: the supervisor wired, as L{stproxy.assembly} wires a worker.
"""
