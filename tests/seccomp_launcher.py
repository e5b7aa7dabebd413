r"""
Exec a command under seccomp filters equivalent to a systemd unit's, for
``tests/deploy/test_systemd.py``::

    python tests/seccomp_launcher.py --allow-file ALLOWED --families "AF_INET AF_UNIX" \
        [--write-xor-execute] -- COMMAND...

Only the standard library: it runs as a script, before the command it execs.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import socket
import sys
from pathlib import Path

__all__ = ["libseccomp", "main"]

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_EQ = 4
_SCMP_CMP_MASKED_EQ = 7


def _scmp_act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def libseccomp():
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def main(argv: list[str]) -> None:
    """
    Exec a command under seccomp filters equivalent to the unit's SystemCallFilter=,
    SystemCallErrorNumber=EPERM, RestrictAddressFamilies= and (with --write-xor-execute)
    MemoryDenyWriteExecute=yes
    (as systemd 252 builds them: separate filters, the most restrictive answer wins).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow-file", required=True)
    parser.add_argument("--families", required=True)
    parser.add_argument("--write-xor-execute", action="store_true")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    lib = libseccomp()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (NoNewPrivileges=yes)
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")

    def rule(ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call on this architecture
        array = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
        if lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array) != 0:
            raise OSError(f"seccomp_rule_add {name}")

    # 1. The allow list: everything else fails with EPERM.
    allowed = Path(args.allow_file).read_text().split()
    allow = lib.seccomp_init(_scmp_act_errno(errno.EPERM))
    for name in allowed:
        rule(allow, _SCMP_ACT_ALLOW, name)
    # 2. W^X: no mapping both writable and executable; no mprotect to executable.
    wx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    prot_wx = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
    rule(wx, _scmp_act_errno(errno.EPERM), "mmap", (2, _SCMP_CMP_MASKED_EQ, prot_wx, prot_wx))
    for name in ("mprotect", "pkey_mprotect"):
        rule(wx, _scmp_act_errno(errno.EPERM), name, (2, _SCMP_CMP_MASKED_EQ, 0x4, 0x4))
    rule(wx, _scmp_act_errno(errno.EPERM), "shmat", (2, _SCMP_CMP_MASKED_EQ, 0o100000, 0o100000))
    # 3. Address families: socket() in any other family fails with EAFNOSUPPORT.
    families = {getattr(socket, name) for name in args.families.split()}
    af = lib.seccomp_init(_SCMP_ACT_ALLOW)
    for family in range(0, 64):
        if family not in families:
            rule(af, _scmp_act_errno(errno.EAFNOSUPPORT), "socket", (0, _SCMP_CMP_EQ, family, 0))
    # The allow list last: seccomp(2) itself is not on it.
    for ctx in ([wx] if args.write_xor_execute else []) + [af, allow]:
        result = lib.seccomp_load(ctx)
        if result != 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")
    os.execv(args.command[0], args.command)



if __name__ == "__main__":
    main(sys.argv[1:])
