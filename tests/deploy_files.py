"""
The deploy files (``deploy/``) read the way their tools read them: YAML for compose and
Kubernetes, systemd's unit syntax, the Dockerfile and its ``.dockerignore``; and every stproxy
command line found in them, with the environment it runs with.

Shared by the tests under ``tests/deploy/``.
"""

from __future__ import annotations

import datetime
import fnmatch
import ipaddress
import json
import re
import shlex
import ssl
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Iterator

import yaml

from harness import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
#: The compose files with one Streamlit container, reached by name through the seed variables.
COMPOSE_FILES = ["compose.yaml", "compose.tls.yaml"]
#: Three Streamlit replicas, found by stproxy through Docker's DNS (``--upstream-dns``).
REPLICAS_COMPOSE_FILE = "compose.replicas.yaml"
ALL_COMPOSE_FILES = [*COMPOSE_FILES, REPLICAS_COMPOSE_FILE]
#: The variables the compose files require (``${VAR:?...}``), as a user would export them.
COMPOSE_VARIABLES = {"STREAMLIT_COOKIE_SECRET": "0123456789abcdef0123456789abcdef"}

#: The namespace the Kubernetes command lines are expanded for (``$(POD_NAMESPACE)``).
K8S_NAMESPACE = "default"


# --------------------------------------------------------------------- command lines and values


def flag_values(args: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` in ``args`` (``--flag VALUE`` or ``--flag=VALUE``)."""
    values = []
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
    return values


def flag_value(args: list[str], flag: str) -> str | None:
    values = flag_values(args, flag)
    return values[-1] if values else None


def default_shutdown_timeout() -> float:
    from stproxy.tap import Options

    for name, _short, default, _doc in Options.optParameters:
        if name == "shutdown-timeout":
            return float(default)
    raise AssertionError("stproxy has no --shutdown-timeout option")


def shutdown_timeout(args: list[str]) -> float:
    value = flag_value(args, "--shutdown-timeout")
    return float(value) if value is not None else default_shutdown_timeout()


def endpoint_port(description: str) -> int:
    """The port of a ``tcp:PORT[:...]``/``ssl:PORT[:...]`` endpoint description."""
    match = re.match(r"^(?:tcp|ssl):(?:port=)?(\d+)(?::|$)", description)
    assert match, f"not a tcp:/ssl: endpoint with a port: {description!r}"
    return int(match.group(1))


def compose_duration(text: str | int) -> float:
    """Seconds in a compose duration (``45s``, ``1m30s``, ``500ms``)."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def as_list(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def healthcheck_url(command: list[str]) -> tuple[int, str]:
    """The loopback port and path a healthcheck command fetches."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"\s]*)", " ".join(command))
    assert match, f"no http://127.0.0.1:PORT/PATH in the health check {command}"
    return int(match.group(1)), match.group(2)


def http_get(url: str, timeout: float = 5, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_status(url: str) -> int | None:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:
        return None


def make_certificate(directory: Path, cert_name: str, key_name: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for localhost/127.0.0.1, written as ``cert_name``/``key_name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / cert_name, directory / key_name
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


# ----------------------------------------------------------------------- compose and Kubernetes


def load_yaml(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def k8s_env(container: dict, namespace: str = K8S_NAMESPACE) -> dict[str, str]:
    """
    The container's ``env`` as the kubelet sets it, for the entries that need no cluster:
    literal values, and the downward API's ``metadata.namespace`` (as ``namespace``). Values
    from Secrets and ConfigMaps are left out (``k8s_env_sources`` shows where they come from).
    """
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field == "metadata.namespace":
                env[entry["name"]] = namespace
    return env


def k8s_env_sources(container: dict) -> dict[str, dict]:
    """{name: valueFrom} of the container's variables that come from elsewhere."""
    return {e["name"]: e["valueFrom"] for e in container.get("env", []) if "valueFrom" in e}


def k8s_expand(arg: str, env: dict[str, str]) -> str:
    """
    Kubernetes' expansion of ``$(VAR)`` in ``command`` and ``args``: a variable the container
    defines is replaced, an unknown one stays as written, and ``$$`` is a literal ``$``.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, arg)


def secret_mount(pod: dict, container: dict, path: str) -> tuple[dict, dict, str]:
    """
    The read-only mount, Secret volume and Secret key behind the file ``path`` in ``container``:
    (mount, the volume's ``secret``, key). Fails when no Secret volume is mounted over ``path``.
    """
    file = PurePosixPath(path)
    for mount in container.get("volumeMounts", []):
        if file.parent != PurePosixPath(mount["mountPath"]):
            continue
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert "secret" in volume, f"{path}: the volume {volume['name']!r} is not a Secret"
        secret = volume["secret"]
        items = secret.get("items")
        if items is None:
            return mount, secret, file.name
        key = next((item["key"] for item in items if item["path"] == file.name), None)
        assert key is not None, f"{path}: no item of the Secret {secret['secretName']!r} is there"
        return mount, secret, key
    raise AssertionError(f"no volume is mounted at {file.parent} for {path}")


def container_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for entry in container["ports"]:
        if entry.get("name") == port:
            return entry["containerPort"]
    raise AssertionError(f"no container port named {port!r}")


# -------------------------------------------------------------------------------------- systemd


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (continuation lines joined)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(unit: dict) -> dict[str, str]:
    """The EnvironmentFile's variables, from its example deploy/stproxy.env."""
    (env_file,) = unit["Service"]["EnvironmentFile"]
    assert env_file.lstrip("-") == "/etc/stproxy/stproxy.env"
    env = {}
    for line in (DEPLOY / "stproxy.env").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def exec_start_args(unit: dict, env: dict[str, str]) -> list[str]:
    """stproxy's arguments from ExecStart, with $VAR expanded as systemd does (split at spaces)."""
    (exec_start,) = unit["Service"]["ExecStart"]
    words = []
    for word in shlex.split(exec_start):
        if re.fullmatch(r"\$\w+", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(word)
    assert words[:4] == ["/opt/stproxy/bin/twistd", "-n", "--pidfile=", "stproxy"]
    return words[4:]


# ----------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    instructions = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env(instructions: list[tuple[str, str]], base_path: str) -> dict[str, str]:
    """The final image's ENV, ``$PATH``/``${PATH}`` expanded from ``base_path`` and earlier ENV."""
    env = {"PATH": base_path}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                value = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
                env[key] = value
    return env


def only(instructions: list[tuple[str, str]], keyword: str) -> str:
    values = [rest for k, rest in instructions if k == keyword]
    assert len(values) == 1, f"expected one {keyword}, found {len(values)}"
    return values[0]


#: The PATH of the python:*-slim images, which the Dockerfile's ENV PATH extends.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def dockerignore_patterns(dockerfile: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """BuildKit's per-Dockerfile ignore file, as (is_exception, regex) in order."""
    patterns = []
    for line in Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            else:
                regex += fnmatch.translate(pattern[i]).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*")
                i += 1
        patterns.append((exception, re.compile(regex + r"\Z")))
    return patterns


def dockerignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for exception, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not exception
    return ignored


def copy_instructions(dockerfile: Path) -> list[tuple[list[str], str]]:
    copies = []
    for keyword, rest in dockerfile_instructions(dockerfile):
        if keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


# ------------------------------------------------------------------- every stproxy command line


def command_lines() -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """(where, stproxy arguments, environment) of every stproxy command line in deploy/."""
    instructions = dockerfile_instructions()
    image_env = dockerfile_env(instructions, BASE_IMAGE_PATH)
    seed = {k: v for k, v in image_env.items() if k in ("STREAMLIT_HOST", "STREAMLIT_PORT", "PROXY_HOST", "PROXY_PORT")}
    yield "Dockerfile CMD", json.loads(only(instructions, "CMD")), seed
    for name in ALL_COMPOSE_FILES:
        (doc,) = load_yaml(DEPLOY / name)
        proxy = doc["services"]["proxy"]
        yield name, as_list(proxy["command"]), {**seed, **compose_env(proxy)}
    objects = k8s_objects()
    container = objects[("Deployment", "stproxy")]["spec"]["template"]["spec"]["containers"][0]
    env = k8s_env(container)
    args = [k8s_expand(arg, env) for arg in container["args"]]
    yield "kubernetes/stproxy.yaml", args, {**seed, **env}
    unit = read_unit(DEPLOY / "stproxy.service")
    env = unit_environment(unit)
    yield "stproxy.service", exec_start_args(unit, env), env
    # The env file's commented TLS example, as if uncommented.
    example = re.search(r"^#\s*STPROXY_ARGS=(.*)$", (DEPLOY / "stproxy.env").read_text(), re.M)
    yield "stproxy.env TLS example", exec_start_args(unit, {**env, "STPROXY_ARGS": example.group(1)}), env
