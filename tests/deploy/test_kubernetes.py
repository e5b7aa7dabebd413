"""
The Kubernetes manifests (``deploy/kubernetes/``): hardened pods, Services that reach them,
probes, grace periods and the certificate Secret, and ``kubectl kustomize`` where installed.
"""

from __future__ import annotations

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
    k8s_objects,
    shutdown_timeout,
)
from stproxy.edge.descriptors import descriptorsFor


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
    The Streamlit Deployment is hardened, reached by its Service on 8501 with ClientIP affinity,
    and probed on /_stcore/health.
    """
    objects = k8s_objects()
    deployment, service = objects[("Deployment", "streamlit")], objects[("Service", "streamlit")]
    pod = deployment["spec"]["template"]["spec"]
    check_hardened_pod(pod)
    (container,) = pod["containers"]
    assert "--server.port=8501" in container["command"] + container.get("args", [])
    assert check_service_targets(service, deployment) == {8501: 8501}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], container_port(container, get["port"])) == ("/_stcore/health", 8501)
    # Several replicas need every request of a session on one replica (README, "Several Streamlit replicas").
    assert service["spec"]["sessionAffinity"] == "ClientIP"


def test_kubernetes_stproxy() -> None:
    """
    The stproxy Deployment is hardened, forwards to the streamlit Service, listens with TLS on
    8443 and plainly on 8500, is probed on its admin port, drains within its grace period and
    reads its certificate from a read-only kubernetes.io/tls Secret.
    """
    objects = k8s_objects()
    deployment, service = objects[("Deployment", "stproxy")], objects[("Service", "stproxy")]
    pod = deployment["spec"]["template"]["spec"]
    check_hardened_pod(pod)
    (container,) = pod["containers"]
    args = container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}

    # The upstream is the streamlit Service.
    streamlit_service = objects[("Service", "streamlit")]
    assert env["STREAMLIT_HOST"] == streamlit_service["metadata"]["name"]
    assert int(env["STREAMLIT_PORT"]) in {p["port"] for p in streamlit_service["spec"]["ports"]}

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
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep = float(command[1])
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
