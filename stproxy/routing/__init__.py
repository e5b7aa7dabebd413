"""
Routing: which app a request is for, and which replica of it.

Streamlit keeps each session in one process, so with several replicas every
request of a browser must reach the one holding its session:

- C{route}: apps by prefix, and the decision for one request (L{Pin});
- C{replica}: one Streamlit process, up, down or draining, and its sessions;
- C{replicaset}: an app's replicas, the choice for a new browser, draining;
- C{affinity}: the signed cookie naming a browser's replica;
- C{forwarding}: one HTTP request's attempts, retried where that is safe;
- C{health}: the active health check of a replica;
- C{discovery}: replicas found in DNS (a Kubernetes headless Service);
- C{metrics}: the per-replica metrics;
- C{single}: one server as routes, for programs that built one L{Upstream}.
"""
