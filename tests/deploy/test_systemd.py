"""
The systemd units (``deploy/stproxy.service``, ``deploy/streamlit.service``): sandboxing keys,
``systemd-analyze verify`` and ``security``; and stproxy with TLS actually runs under the unit's
seccomp filters (SystemCallFilter, RestrictAddressFamilies, MemoryDenyWriteExecute when set),
rebuilt here with libseccomp by ``tests/seccomp_launcher.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_files import (
    DEPLOY,
    exec_start_args,
    flag_value,
    http_get,
    make_certificate,
    read_unit,
    shutdown_timeout,
    unit_environment,
)
from harness import HERE, start_proxy, start_upstream_server
from seccomp_launcher import libseccomp
from stproxy.edge.descriptors import descriptorsFor, maxConnections

#: The launcher that execs a command under the unit's seccomp filters.
LAUNCHER = HERE / "seccomp_launcher.py"

#: Keys the stproxy unit must set (value ``None``: any value), per the deployment brief.
SANDBOX = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    # MemoryDenyWriteExecute: decided by test_stproxy_runs_under_the_units_seccomp_filters
    # (pyOpenSSL's cffi callbacks need write+execute pages, so it is off for TLS).
    "CapabilityBoundingSet": "",
}



def test_systemd_unit_sandboxing() -> None:
    """
    The stproxy unit sets every sandboxing key, reloads with SIGHUP, restarts on failure and
    gives the drain time before systemd kills it.
    """
    unit = read_unit(DEPLOY / "stproxy.service")
    service = unit["Service"]
    for key, value in SANDBOX.items():
        assert service.get(key, [None])[-1] == value, f"{key}={value} missing from stproxy.service"
    assert service["SystemCallFilter"][0] == "@system-service"
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["Restart"] == ["on-failure"]
    args = exec_start_args(unit, unit_environment(unit))
    assert float(service["TimeoutStopSec"][0]) > shutdown_timeout(args)
    # No capability is granted that the bounding set does not allow.
    ambient = service.get("AmbientCapabilities", [""])[-1].split()
    assert set(ambient) <= set(service["CapabilityBoundingSet"][-1].split())


def test_systemd_unit_leaves_room_for_connections() -> None:
    """
    The stproxy unit raises the descriptor limit (1024 by default, under which the connection cap
    would be 416), and any --max-connections it sets fits under it: the sandbox forbids setrlimit.
    """
    unit = read_unit(DEPLOY / "stproxy.service")
    soft, _, hard = unit["Service"]["LimitNOFILE"][-1].partition(":")
    assert int(soft) == int(hard or soft) >= 65536
    assert "@resources" in unit["Service"]["SystemCallFilter"][-1]  # hence: no raising it inside
    args = exec_start_args(unit, unit_environment(unit))
    cap = flag_value(args, "--max-connections")
    default = maxConnections(None, limits=(int(soft), int(soft)))
    assert default >= 30000
    if cap is not None:
        assert descriptorsFor(int(cap)) <= int(soft)


def _units_for_verify(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart binaries exist here (verify checks they do)."""
    bindir = Path(sys.executable).parent
    replacements = {
        "/opt/stproxy/bin/twistd": bindir / "twistd",
        "/opt/streamlit/bin/streamlit": bindir / "streamlit",
    }
    units = []
    for name in ("stproxy.service", "streamlit.service"):
        text = (DEPLOY / name).read_text(encoding="utf-8")
        for image_path, local in replacements.items():
            if image_path in text:
                if not local.exists():
                    pytest.skip(f"{local} is not installed")
                text = text.replace(image_path, str(local))
        (tmp_path / name).write_text(text, encoding="utf-8")
        units.append(tmp_path / name)
    return units


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify``: no unknown keys, bad values or missing binaries."""
    tool = _systemd_analyze()
    units = _units_for_verify(tmp_path)
    result = subprocess.run(
        [tool, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and only warns, so the output must be empty too.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0 and any("Failed to" in line and "manager" in line for line in complaints):
        pytest.skip(f"systemd-analyze verify cannot run in this container: {complaints}")
    assert result.returncode == 0 and not complaints, complaints


def test_systemd_analyze_security(tmp_path: Path) -> None:
    """``systemd-analyze security --offline``: the stproxy unit's exposure is low (OK or better)."""
    tool = _systemd_analyze()
    unit = _units_for_verify(tmp_path)[0]
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline is not available: {result.stderr.strip()}")
    assert float(match.group(1)) <= 2.0, result.stdout


# --------------------------------------------------------- the unit's seccomp filters, for real


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups (``systemd-analyze syscall-filter``): {"@name": [members]}."""
    output = subprocess.run(
        [_systemd_analyze(), "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand_syscalls(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    for name in names:
        result |= expand_syscalls(groups[name], groups) if name.startswith("@") else {name}
    return result


def test_stproxy_runs_under_the_units_seccomp_filters(tmp_path: Path) -> None:
    """
    TLS stproxy (pyOpenSSL's cffi callbacks, Twisted, Autobahn) serves and reloads on SIGHUP
    under the stproxy unit's system call allow list and address-family filter, and W^X when
    the unit sets MemoryDenyWriteExecute=yes.
    """
    lib = libseccomp()
    if lib is None:
        pytest.skip("libseccomp is not installed")
    service = read_unit(DEPLOY / "stproxy.service")["Service"]
    groups = syscall_groups()
    allowed: set[str] = set()
    for line in service["SystemCallFilter"]:
        if line.startswith("~"):
            allowed -= expand_syscalls(line[1:].split(), groups)
        else:
            allowed |= expand_syscalls(line.split(), groups)
    assert service["SystemCallErrorNumber"] == ["EPERM"]
    write_xor_execute = service.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"
    allow_file = tmp_path / "allowed.txt"
    allow_file.write_text("\n".join(sorted(allowed)))

    cert, key = make_certificate(tmp_path / "tls", "fullchain.pem", "privkey.pem")
    twistd = Path(sys.executable).parent / "twistd"
    probe = subprocess.run(
        [sys.executable, str(LAUNCHER), "--allow-file", str(allow_file), "--families", "AF_INET", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0 and "seccomp_load" in probe.stderr:
        pytest.skip(f"seccomp filters cannot be loaded here: {probe.stderr.strip().splitlines()[-1]}")
    launcher = [
        sys.executable, str(LAUNCHER), "--allow-file", str(allow_file),
        "--families", service["RestrictAddressFamilies"][-1],
        *(["--write-xor-execute"] if write_xor_execute else []), "--", str(twistd),
    ]  # fmt: skip
    upstream = start_upstream_server()
    try:
        proxy = start_proxy(
            "--upstream", upstream.address,
            "--listen", "ssl:0:interface=127.0.0.1",
            "--tls-cert", str(cert), "--tls-key", str(key),
            command=[*launcher, "-n", "--pidfile=", "stproxy"],
        )  # fmt: skip
        try:
            context = ssl.create_default_context(cafile=str(cert))
            url = f"https://127.0.0.1:{proxy.port}/echo/sandboxed"
            status, body = http_get(url, context=context)
            assert status == 200, body
            assert json.loads(body)["path"] == "/echo/sandboxed"
            # ExecReload: SIGHUP reloads the certificate and the proxy goes on serving.
            since = len(proxy.output())
            os.kill(proxy.pid, signal.SIGHUP)
            reloaded = proxy.wait_for_output(r"[^\n]*reload[^\n]*", timeout=10, since=since)
            assert "fail" not in reloaded.group(0), proxy.output()
            assert http_get(url, context=context)[0] == 200
            assert proxy.process.poll() is None, proxy.output()
            assert "Operation not permitted" not in proxy.output(), proxy.output()
        finally:
            code = proxy.stop(timeout=20)
        assert code == 0, proxy.output()
    finally:
        upstream.stop()
