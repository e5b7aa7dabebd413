"""
Every stproxy command line in ``deploy/`` (Dockerfile CMD, compose, Kubernetes, systemd and the
env file's TLS example) is accepted by stproxy's own option parser, with the environment each
one runs with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest

from deploy_files import command_lines, endpoint_port, make_certificate

#: The command lines that find their Streamlit replicas through DNS (``--upstream-dns``), and
#: the name and port each intends (Kubernetes' $(POD_NAMESPACE) expanded as ``default``).
DNS_UPSTREAMS = {
    "compose.replicas.yaml": ("streamlit", 8501),
    "kubernetes/stproxy.yaml": ("streamlit-replicas.default.svc.cluster.local", 8501),
}


def parse_with_stproxy(args: list[str], env: dict[str, str], tmp_path: Path) -> Any:
    """
    Parse ``args`` with stproxy's own Options and ``env`` as the environment, certificate paths
    and the affinity key swapped for freshly made files; the usage error (if any) fails the test.
    """
    from twisted.python import usage

    from stproxy.tap import Options

    cert, key = make_certificate(tmp_path / "tls", "cert.pem", "key.pem")
    secret = tmp_path / "affinity-secret"
    secret.write_text("0123456789abcdef" * 4 + "\n")
    files = {"--tls-cert": cert, "--tls-key": key, "--affinity-secret-file": secret}
    swapped = list(args)
    for i, arg in enumerate(swapped[:-1]):
        if arg in files:
            assert PurePosixPath(swapped[i + 1]).is_absolute(), f"{arg} {swapped[i + 1]}: not absolute"
            swapped[i + 1] = str(files[arg])
    options = Options(environ=env)
    options.exitOnError = False
    try:
        options.parseOptions(swapped)
    except usage.UsageError as e:
        pytest.fail(f"stproxy refuses {args} with {env}: {e}")
    return options


def config_leaves(value: Any, depth: int = 0) -> Iterator[Any]:
    """
    Every str, bytes and int inside a parsed configuration: through dataclasses, mappings,
    sequences and stproxy's own objects, whatever shape the configuration of DNS-found replicas
    takes.
    """
    if isinstance(value, (str, bytes, int)):
        yield value
        return
    if depth > 10 or value is None:
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, Mapping):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    elif type(value).__module__.startswith("stproxy."):
        names = getattr(value, "__slots__", None) or list(getattr(value, "__dict__", {}))
        children = [getattr(value, name, None) for name in names]
    else:
        return
    for child in children:
        yield from config_leaves(child, depth + 1)


@pytest.mark.parametrize("where", [w for w, _, _ in command_lines()])
def test_command_line_is_accepted(where: str, tmp_path: Path) -> None:
    """stproxy's own parser accepts each command line, with the upstream each deploy intends."""
    args, env = next((a, e) for w, a, e in command_lines() if w == where)
    options = parse_with_stproxy(args, env, tmp_path)
    if where in DNS_UPSTREAMS:
        # Replicas found through DNS: the deploy's --upstream-dns (checked by
        # test_dns_command_lines_are_the_deploys) reaches the parsed configuration, whatever
        # its shape. Name and port are swapped for ones no other setting could hold (compose's
        # "streamlit" and 8501 are also the image's $STREAMLIT_HOST and $STREAMLIT_PORT).
        name, port = DNS_UPSTREAMS[where]
        unique, unique_port = "dns-check.stproxy.test", 18577
        swapped = [a.replace(f"{name}:{port}", f"{unique}:{unique_port}") for a in args]
        assert swapped != args
        leaves = list(config_leaves(parse_with_stproxy(swapped, env, tmp_path / "dns").config))
        texts = [v.decode() if isinstance(v, bytes) else v for v in leaves]
        texts = [t for t in texts if isinstance(t, str)]
        named = [t for t in texts if t == unique or t.endswith(f"{unique}:{unique_port}")]
        assert named, f"--upstream-dns {unique}:{unique_port} is not in the parsed configuration"
        assert unique_port in leaves or any(t.endswith(f":{unique_port}") for t in named)
    else:
        upstream = options.config.upstream
        expected = ("127.0.0.1", 8501) if where.startswith("stproxy.") else ("streamlit", 8501)
        assert (upstream.host, upstream.port) == expected
    assert options.config.operations.admin is not None and endpoint_port(options.config.operations.admin) == 9100
    if where.startswith("stproxy."):
        assert "interface=127.0.0.1" in options.config.operations.admin, "a host's admin listener stays on loopback"


def test_dns_command_lines_are_the_deploys() -> None:
    """
    The command lines checked above as DNS-found replicas are the ones in deploy/ that give
    --upstream-dns, naming what DNS_UPSTREAMS expects: none is skipped or checked the wrong way.
    """
    found = {}
    for where, args, _env in command_lines():
        values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--upstream-dns"]
        if values:
            found[where] = values
    assert found == {where: [f"{name}:{port}"] for where, (name, port) in DNS_UPSTREAMS.items()}
