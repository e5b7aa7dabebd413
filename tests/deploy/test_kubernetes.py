"""
The Kubernetes manifests (``deploy/kubernetes/``): hardened pods, Services that reach them,
probes, grace periods and the certificate Secret; three Streamlit replicas behind a headless
Service that two stproxy pods discover, sharing the affinity key and Streamlit's cookie secret
through Secrets; and ``kubectl kustomize`` where installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
import yaml

from deploy_files import (
    KUBERNETES,
    container_port,
    endpoint_port,
    flag_value,
    flag_values,
    k8s_env,
    k8s_env_sources,
    k8s_objects,
    secret_mount,
    shutdown_timeout,
)
from stproxy.edge.descriptors import descriptorsFor

#: How long CoreDNS may keep answering with a deleted pod's address (the kubernetes plugin's
#: default TTL), before stproxy's next discovery sees it gone.
DNS_TTL = 5

#: Seconds Streamlit needs to exit after SIGTERM (it stops at once; this is the margin).
STREAMLIT_EXIT = 5


def check_hardened_pod(pod: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod.get("enableServiceLinks") is False, (
        "service links put STREAMLIT_PORT=tcp://... into the environment"
    )
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])


def pre_stop_sleep(container: dict) -> float:
    """The seconds a container's preStop hook sleeps (``sleep:`` or ``exec: sleep N``)."""
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


def discovery_interval(args: list[str]) -> float:
    """stproxy's --discovery-interval in ``args``, else its default (from its optParameters)."""
    value = flag_value(args, "--discovery-interval")
    if value is not None:
        return float(value)
    from stproxy.tap import Options

    for option, _short, default, _doc in Options.optParameters:
        if option == "discovery-interval":
            return float(default)
    raise AssertionError("stproxy has no --discovery-interval option with a default")


def pod_of(deployment: dict) -> tuple[dict, dict]:
    """The Deployment's pod spec and its one container."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def services_selecting(objects: dict, deployment: dict) -> list[dict]:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return [
        obj
        for (kind, _name), obj in objects.items()
        if kind == "Service" and obj["spec"].get("selector", {}).items() <= labels.items()
    ]


def upstream_dns(args: list[str]) -> tuple[str, int]:
    """The NAME and PORT of stproxy's one --upstream-dns NAME:PORT (or http://NAME:PORT)."""
    (value,) = flag_values(args, "--upstream-dns")
    name, _, port = value.removeprefix("http://").rpartition(":")
    return name, int(port)


def check_service_targets(service: dict, deployment: dict) -> dict[int, int]:
    """The Service selects the Deployment's pods; returns {service port: container port}."""
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    return {
        p["port"]: container_port(container, p.get("targetPort", p["port"]))
        for p in service["spec"]["ports"]
    }


def test_kubernetes_streamlit() -> None:
    """
    The Streamlit Deployment is hardened, runs three replicas on 8501 rolled one at a time, and
    is probed on /_stcore/health (readiness is what puts a pod in the headless Service's DNS).
    """
    objects = k8s_objects()
    deployment = objects[("Deployment", "streamlit")]
    pod, container = pod_of(deployment)
    check_hardened_pod(pod)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "--server.port=8501" in container["command"] + container.get("args", [])
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], container_port(container, get["port"])) == ("/_stcore/health", 8501)
    # Voluntary evictions leave at least two replicas.
    budget = objects[("PodDisruptionBudget", "streamlit")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"].get("minAvailable") == 2


def test_kubernetes_streamlit_headless_service() -> None:
    """
    The Streamlit pods are reached only through a headless Service (clusterIP None, ready pods
    only) exposing 8501: its name resolves to one A record per ready pod, and no virtual IP
    balances a session's requests across replicas behind stproxy's back.
    """
    objects = k8s_objects()
    deployment = objects[("Deployment", "streamlit")]
    (service,) = services_selecting(objects, deployment)
    assert service["metadata"]["name"] == "streamlit-replicas"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("publishNotReadyAddresses", False) is False
    assert check_service_targets(service, deployment) == {8501: 8501}


def test_kubernetes_streamlit_cookie_secret() -> None:
    """
    Every Streamlit replica gets the same server.cookieSecret, as STREAMLIT_SERVER_COOKIE_SECRET
    from the Secret streamlit-cookie-secret (never a value written in the manifest).
    """
    _pod, container = pod_of(k8s_objects()[("Deployment", "streamlit")])
    assert "STREAMLIT_SERVER_COOKIE_SECRET" not in k8s_env(container)
    source = k8s_env_sources(container)["STREAMLIT_SERVER_COOKIE_SECRET"]
    assert source["secretKeyRef"]["name"] == "streamlit-cookie-secret"
    assert source["secretKeyRef"]["key"] == "cookieSecret"
    assert source["secretKeyRef"].get("optional", False) is False, "one replica's own secret"
    words = container["command"] + container.get("args", [])
    assert not any("cookieSecret" in word for word in words)


def test_kubernetes_stproxy() -> None:
    """
    The stproxy Deployment is hardened, forwards to the streamlit Service, listens with TLS on
    8443 and plainly on 8500, is probed on its admin port, drains within its grace period and
    reads its certificate from a read-only kubernetes.io/tls Secret.
    """
    objects = k8s_objects()
    deployment, service = objects[("Deployment", "stproxy")], objects[("Service", "stproxy")]
    pod, container = pod_of(deployment)
    check_hardened_pod(pod)
    args = container["args"]

    # The upstream is found through DNS (test_kubernetes_stproxy_discovers_the_replicas), not
    # the seed variables.
    assert not {"STREAMLIT_HOST", "STREAMLIT_PORT"} & set(k8s_env(container))

    # Listeners: TLS on 8443 and plain HTTP on 8500, both behind the Service.
    listens = flag_values(args, "--listen")
    assert "ssl:8443" in listens and "tcp:8500" in listens
    targets = check_service_targets(service, deployment)
    assert set(targets.values()) == {8443, 8500}

    # Probes on the admin port.
    admin_port = endpoint_port(flag_value(args, "--admin"))
    assert admin_port == 9100
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert (get["path"], container_port(container, get["port"])) == (path, admin_port)

    # SIGTERM comes after preStop; the drain must end before the grace period does.
    sleep = pre_stop_sleep(container)
    assert 1 <= sleep <= 15
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > sleep + shutdown_timeout(args)

    # The certificate: a kubernetes.io/tls Secret mounted read-only where the flags look.
    cert, key = flag_value(args, "--tls-cert"), flag_value(args, "--tls-key")
    assert (PurePosixPath(cert).name, PurePosixPath(key).name) == ("tls.crt", "tls.key")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(PurePosixPath(cert).parent))
    assert mount["readOnly"] is True and "subPath" not in mount, "subPath mounts never see renewals"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "stproxy-tls"
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o007 == 0 or mode == 0o644  # not world-readable unless Kubernetes' default
    if mode & 0o004 == 0:
        assert pod["securityContext"].get("fsGroup") == pod["securityContext"]["runAsGroup"]


def test_kubernetes_stproxy_discovers_the_replicas() -> None:
    """
    Two stproxy pods find the Streamlit pods with --upstream-dns naming the headless Service
    and its port: the name in full (stproxy's resolver applies no resolv.conf search list),
    with the pod's own namespace from the downward API, or the Service's short name. The
    stproxy Service needs no ClientIP affinity, as the cookie routes through either pod.
    """
    objects = k8s_objects()
    deployment = objects[("Deployment", "stproxy")]
    assert deployment["spec"]["replicas"] == 2
    pod, container = pod_of(deployment)
    (headless,) = services_selecting(objects, objects[("Deployment", "streamlit")])

    name, port = upstream_dns(container["args"])
    assert port in {p["port"] for p in headless["spec"]["ports"]}
    service, _, rest = name.partition(".")
    assert service == headless["metadata"]["name"]
    if rest:
        match = re.fullmatch(r"\$\((\w+)\)\.svc\.([a-z0-9.-]+)", rest)
        assert match, f"{name}: not SERVICE.$(NAMESPACE_VARIABLE).svc.CLUSTER_DOMAIN"
        variable = match.group(1)
        # Kubernetes expands $(VAR) only for variables the container defines.
        source = k8s_env_sources(container).get(variable)
        assert source == {"fieldRef": {"fieldPath": "metadata.namespace"}}, f"$({variable})"
    interval = discovery_interval(container["args"])
    assert 0 < interval <= 10

    stproxy_service = objects[("Service", "stproxy")]
    assert stproxy_service["spec"].get("sessionAffinity", "None") == "None"


def test_kubernetes_stproxy_affinity_secret() -> None:
    """
    Both stproxy pods sign the affinity cookie with one key: --affinity-secret-file names a file
    of a read-only, not world-readable volume from the Secret stproxy-affinity, key `secret`.
    """
    deployment = k8s_objects()[("Deployment", "stproxy")]
    pod, container = pod_of(deployment)
    path = flag_value(container["args"], "--affinity-secret-file")
    assert path is not None and PurePosixPath(path).is_absolute()
    mount, secret, key = secret_mount(pod, container, path)
    assert mount["readOnly"] is True and "subPath" not in mount
    assert (secret["secretName"], key) == ("stproxy-affinity", "secret")
    assert secret.get("optional", False) is False, "without it each pod would pick its own key"
    mode = secret.get("defaultMode", 0o644)
    assert mode & 0o007 == 0, "the affinity key is not world-readable"
    assert pod["securityContext"].get("fsGroup") == pod["securityContext"]["runAsGroup"]


def test_kubernetes_replica_drain_ends_before_streamlit_stops() -> None:
    """
    A deleted Streamlit pod keeps serving (its preStop sleep) until stproxy has seen it leave
    DNS (the record's TTL, then one --discovery-interval) and its --replica-drain-timeout has
    run out, so its WebSockets end with stproxy's 1012 rather than a cut; and it exits within
    its terminationGracePeriodSeconds.
    """
    objects = k8s_objects()
    _pod, proxy = pod_of(objects[("Deployment", "stproxy")])
    streamlit_pod, streamlit = pod_of(objects[("Deployment", "streamlit")])
    args = proxy["args"]
    drain = flag_value(args, "--replica-drain-timeout")
    assert drain is not None, "say the drain timeout where the Streamlit grace period depends on it"
    interval = discovery_interval(args)
    sleep = pre_stop_sleep(streamlit)
    grace = streamlit_pod["terminationGracePeriodSeconds"]
    assert 0 < float(drain) and DNS_TTL + interval + float(drain) <= sleep
    assert sleep + STREAMLIT_EXIT <= grace


def test_kubernetes_secrets_are_documented() -> None:
    """
    Every Secret the pods use is created by a command the manifests' comments spell out (the
    manifests hold no secret themselves).
    """
    objects = k8s_objects()
    assert not [name for kind, name in objects if kind == "Secret"], "secret values committed"
    used = set()
    for (kind, _name), deployment in objects.items():
        if kind != "Deployment":
            continue
        pod, container = pod_of(deployment)
        used |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        sources = k8s_env_sources(container).values()
        used |= {s["secretKeyRef"]["name"] for s in sources if "secretKeyRef" in s}
    assert used == {"stproxy-tls", "stproxy-affinity", "streamlit-cookie-secret"}
    comments = "\n".join(
        line.lstrip("# ")
        for path in KUBERNETES.glob("*.yaml")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith("#")
    )
    for secret in used:
        assert re.search(rf"kubectl create secret (?:tls|generic) {secret}\b", comments), secret


def test_kubernetes_stproxy_caps_connections_within_its_memory_and_descriptors() -> None:
    """
    A pod has no ulimit setting, so the stproxy container's --max-connections is explicit: its
    WebSockets (about 50 KiB each over TLS) fit in the memory limit, and the descriptors it needs
    in the hard limit runtimes give (524288 in Docker 25+ and containerd 2; stproxy raises its
    soft limit itself).
    """
    (container,) = k8s_objects()[("Deployment", "stproxy")]["spec"]["template"]["spec"]["containers"]
    cap = int(flag_value(container["args"], "--max-connections"))
    memory = container["resources"]["limits"]["memory"]
    assert memory.endswith("Mi")
    assert 1000 <= cap and cap * 50 * 1024 <= int(memory[:-2]) * 1024 * 1024 * 2 // 3
    assert descriptorsFor(cap) <= 524288


def test_kustomize_renders() -> None:
    """``kubectl apply -k deploy/kubernetes`` renders (``kubectl kustomize`` needs no cluster)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d}
    assert rendered == set(k8s_objects())
