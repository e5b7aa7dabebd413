"""
The htpasswd checker factory (twisted/plugins/stproxy_htpasswd.py): found by twisted.cred's
strcred, so C{--auth htpasswd:PATH} works beside C{memory:} and C{file:}, and a bad file is a
usage error naming the line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.python import usage

from stproxy.auth.htpasswd import HtpasswdChecker


class Options(usage.Options, strcred.AuthOptionMixin):
    """A command line with --auth, as stproxy's has."""

    supportedInterfaces = (IUsernamePassword,)


def users(tmp_path: Path, text: str) -> str:
    """The path of an htpasswd file holding C{text}."""
    path = tmp_path / "users"
    path.write_text(text)
    return str(path)


def test_strcred_finds_the_htpasswd_factory() -> None:
    """The dropin is found by auth type, and says what it takes."""
    factory = strcred.findCheckerFactory("htpasswd")
    assert factory.argStringFormat == "A path to an htpasswd file of bcrypt hashes"
    assert tuple(factory.credentialInterfaces) == (IUsernamePassword,)
    assert "bcrypt" in factory.authHelp


def test_auth_options_accept_htpasswd_memory_and_file(tmp_path: Path) -> None:
    """--auth htpasswd:PATH gives an HtpasswdChecker; memory: and file: still work beside it."""
    hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = users(tmp_path, f"alice:{hash}\n")
    plain = tmp_path / "plain"
    plain.write_text("bob:pw\n")
    options = Options()
    options.parseOptions(
        ["--auth", f"htpasswd:{path}", "--auth", "memory:alice:pw", "--auth", f"file:{plain}"]
    )
    checkers = options["credCheckers"]
    assert len(checkers) == 3
    assert isinstance(checkers[0], HtpasswdChecker) and checkers[0].path == path
    assert list(checkers[0].users) == ["alice"]
    assert options["credInterfaces"][IUsernamePassword] == checkers


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "# ok\nalice:$apr1$abcdefgh$0123456789abcdefghijkl\n",
            "users line 2: user 'alice' has an MD5",
        ),
        ("alice:hunter2\n", "users line 1: user 'alice' has not a hash (clear text?)"),
    ],
)
def test_a_bad_file_is_a_usage_error_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """A weak or clear-text line stops option parsing with one line naming it, not a traceback."""
    path = users(tmp_path, text)
    with pytest.raises(usage.UsageError) as raised:
        Options().parseOptions(["--auth", f"htpasswd:{path}"])
    assert f"{tmp_path}/{message}" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "abcdefgh$0123" not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    """htpasswd: with no path, or a path to nothing, is refused by option parsing."""
    with pytest.raises(usage.UsageError, match="needs the path"):
        Options().parseOptions(["--auth", "htpasswd:"])
    with pytest.raises(usage.UsageError, match="no such file"):
        Options().parseOptions(["--auth", f"htpasswd:{tmp_path}/nothing"])


def test_the_dropin_imports_no_stproxy() -> None:
    """Scanning plugins (twistd --help) imports the dropin but none of stproxy."""
    code = (
        "import sys, twisted.plugins.stproxy_htpasswd\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'stproxy'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
