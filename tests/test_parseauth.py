"""
The authentication flags (stproxy.parseauth) through stproxy's own option parser, and the checks
the configuration makes of them (stproxy.config): --auth methods and their one-line errors,
passwords refused on a plain non-loopback listener unless --allow-insecure-auth, --user-from-cert
only with client certificates, the forward-auth and header-name flags checked, pass-through
prefixes normalised, and --print-streamlit-config printing the TOML and exiting 0.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import bcrypt
import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.python import usage

from option_parsing import parse
from pki import PKI
from stproxy.auth.htpasswd import HtpasswdChecker
from stproxy.auth.identity import IdentityHeaders
from stproxy.auth.settings import AuthSettings
from stproxy.config import Config, ConfigError

LOOPBACK = ("--listen", "tcp:8500:interface=127.0.0.1")
FORWARD = ("--forward-auth", "http://oauth2-proxy:4180/oauth2/auth")


def refused(*argv: str) -> str:
    """The usage error C{argv} is refused with."""
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    return str(caught.value)


def test_no_auth_flags_configure_nothing() -> None:
    """Without authentication flags, authentication is off and the identity headers keep their names."""
    auth = parse().config.auth
    assert not auth.enabled
    assert auth.identity == IdentityHeaders()
    assert auth.checkers == () and auth.forward is None and auth.passthrough == ()


def test_auth_on_the_default_listener_names_allow_insecure_auth() -> None:
    """--auth with the default tcp:8500 (every interface) is refused, naming the listener and the way out."""
    message = refused("--auth", "memory:alice:pw")
    assert "--listen tcp:8500" in message
    assert "--allow-insecure-auth" in message
    assert "\n" not in message


def test_auth_on_a_public_tcp_listener_is_refused() -> None:
    """An explicit plain listener on 0.0.0.0 is refused like the default."""
    message = refused("--auth", "memory:alice:pw", "--listen", "tcp:8500:interface=0.0.0.0")
    assert "interface=0.0.0.0" in message and "--allow-insecure-auth" in message


def test_auth_on_loopback_is_accepted() -> None:
    """On 127.0.0.1 the memory: checker is configured, as the one checker."""
    auth = parse("--auth", "memory:alice:pw", *LOOPBACK).config.auth
    assert len(auth.checkers) == 1
    assert isinstance(auth.checkers[0], InMemoryUsernamePasswordDatabaseDontUse)
    assert auth.enabled and not auth.allowInsecure


def test_auth_on_loopback_from_proxy_host_is_accepted() -> None:
    """--proxy-host ::1 (an escaped IPv6 loopback listener) is loopback too."""
    options = parse("--auth", "memory:alice:pw", "--proxy-host", "::1")
    assert options.config.listen == ("tcp:8500:interface=\\:\\:1",)
    assert len(options.config.auth.checkers) == 1


def test_allow_insecure_auth_lets_a_public_listener_through() -> None:
    """--allow-insecure-auth accepts passwords on the default listener, and says so in the settings."""
    auth = parse("--auth", "memory:alice:pw", "--allow-insecure-auth").config.auth
    assert auth.allowInsecure and len(auth.checkers) == 1


def test_forward_auth_alone_needs_no_secure_listener() -> None:
    """Only passwords are refused on a plain public listener; forward auth is not a password check."""
    auth = parse(*FORWARD).config.auth
    assert auth.forward is not None and auth.forward.url == FORWARD[1]
    assert auth.enabled and auth.checkers == ()


def test_auth_on_an_ssl_listener_is_accepted(pki: PKI) -> None:
    """Passwords over ssl: need no --allow-insecure-auth."""
    options = parse("--auth", "memory:alice:pw", "--listen", "ssl:8443", *pki.server_args())
    assert len(options.config.auth.checkers) == 1


def test_auth_is_repeatable() -> None:
    """Each --auth adds a checker, in order."""
    auth = parse("--auth", "memory:alice:pw", "--auth", "memory:bob:pw", *LOOPBACK).config.auth
    assert len(auth.checkers) == 2


def test_auth_htpasswd_loads_a_bcrypt_file(tmp_path: Path) -> None:
    """--auth htpasswd:PATH gives stproxy's own checker, with the file's users."""
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=4)).decode()}\n")
    [checker] = parse("--auth", f"htpasswd:{path}", *LOOPBACK).config.auth.checkers
    assert isinstance(checker, HtpasswdChecker)
    assert set(checker.users) == {"alice"}


def test_auth_htpasswd_refuses_an_md5_line_naming_it(tmp_path: Path) -> None:
    """An MD5 line is a one-line start-up error naming the file and the line number, not the hash."""
    path = tmp_path / "htpasswd"
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"# users\nbob:{good}\nalice:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n")
    message = refused("--auth", f"htpasswd:{path}", *LOOPBACK)
    assert message.startswith("--auth htpasswd:")
    assert str(path) in message and "line 3" in message
    assert "MD5" in message
    assert "HqJZimcKQFAMYayBlzkrA" not in message
    assert "\n" not in message


def test_auth_htpasswd_of_a_missing_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist is named in the error."""
    message = refused("--auth", f"htpasswd:{tmp_path / 'nope'}", *LOOPBACK)
    assert "--auth htpasswd" in message and "nope" in message


def test_auth_of_an_unknown_method_is_no_such_method() -> None:
    """--auth nope:x names the method and says there is no such method."""
    message = refused("--auth", "nope:x", *LOOPBACK)
    assert message.startswith("--auth nope: no such method")


def test_auth_of_a_method_without_passwords_is_refused() -> None:
    """--auth anonymous checks no user name and password, so it cannot answer HTTP Basic."""
    message = refused("--auth", "anonymous", *LOOPBACK)
    assert message == "--auth anonymous: does not check user names and passwords"


def test_auth_max_failures_is_parsed_and_checked() -> None:
    """--auth-max-failures N is kept; 0 is refused naming the flag."""
    assert parse("--auth-max-failures", "3").config.auth.maxFailures == 3
    assert "--auth-max-failures" in refused("--auth-max-failures", "0")


def test_user_from_cert_needs_a_client_ca() -> None:
    """--user-from-cert cn without --tls-client-ca: nobody could be named, so it is refused."""
    message = refused("--user-from-cert", "cn")
    assert "--user-from-cert" in message and "--tls-client-ca" in message


def test_user_from_cert_with_a_client_ca_is_accepted(pki: PKI) -> None:
    """With an ssl: listener requiring client certificates, --user-from-cert cn is on."""
    options = parse(
        "--user-from-cert", "cn", "--listen", "ssl:8443", *pki.server_args(),
        "--tls-client-ca", pki.ca,
    )  # fmt: skip
    assert options.config.auth.userFromCert and options.config.auth.enabled


@pytest.mark.parametrize("choice", ["dn", "CN", "subject", ""])
def test_user_from_cert_other_than_cn_is_refused(choice: str) -> None:
    """The only choice is cn; anything else is refused naming it."""
    assert "the only choice is cn" in refused("--user-from-cert", choice)


@pytest.mark.parametrize("url", ["not-a-url", "ftp://auth.example/check", "//auth.example/x"])
def test_forward_auth_that_is_no_http_url_is_refused(url: str) -> None:
    """--forward-auth must be an http(s) URL; the error names the flag."""
    assert refused("--forward-auth", url).startswith("--forward-auth:")


def test_forward_auth_flags_reach_the_settings() -> None:
    """Sign-in URL, cache, timeout and copied headers are parsed; the copied headers become managed ones."""
    auth = parse(
        *FORWARD, "--forward-auth-signin", "https://auth.example/oauth2/start",
        "--forward-auth-cache", "30", "--forward-auth-timeout", "2.5",
        "--forward-auth-headers", "X-Auth-Request-User, X-Auth-Request-Access-Token",
    ).config.auth  # fmt: skip
    assert auth.forward is not None
    assert auth.forward.signin == "https://auth.example/oauth2/start"
    assert (auth.forward.cacheSeconds, auth.forward.timeout) == (30, 2.5)
    assert auth.forward.copyHeaders == ("X-Auth-Request-User", "X-Auth-Request-Access-Token")
    assert auth.identity.copied == auth.forward.copyHeaders
    assert b"x-auth-request-access-token" in auth.identity.managed


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--forward-auth-timeout", "0"),
        ("--forward-auth-cache", "-1"),
        ("--forward-auth-headers", "Bad Header"),
    ],
)
def test_bad_forward_auth_values_are_refused(flag: str, value: str) -> None:
    """A timeout of 0, a negative cache time, a header that is no name: each a usage error."""
    assert refused(*FORWARD, flag, value)


def test_passthrough_without_forward_auth_is_refused() -> None:
    """--forward-auth-passthrough routes to the auth service, so it needs one."""
    assert "--forward-auth-passthrough needs --forward-auth" in refused(
        "--forward-auth-passthrough", "/oauth2/"
    )


def test_passthrough_prefixes_are_normalised_in_order() -> None:
    """A trailing slash goes, a leading one is added; repeated flags keep their order."""
    auth = parse(
        *FORWARD, "--forward-auth-passthrough", "/oauth2/",
        "--forward-auth-passthrough", "auth/callback/",
    ).config.auth  # fmt: skip
    assert auth.passthrough == ("/oauth2", "/auth/callback")


@pytest.mark.parametrize("prefix", ["/../", "/a/../b", "/a b"])
def test_passthrough_that_is_no_prefix_is_refused(prefix: str) -> None:
    """A prefix with dot segments or a space is refused, as a route's would be."""
    assert "not a path prefix" in refused(*FORWARD, "--forward-auth-passthrough", prefix)


@pytest.mark.parametrize(
    "flag", ["--user-header", "--email-header", "--groups-header", "--client-cert-header"]
)
@pytest.mark.parametrize("name", ["Bad Header", "X-User:", "", "X-Üser", "X_User\r\n"])
def test_a_header_flag_that_is_no_header_name_is_refused(flag: str, name: str) -> None:
    """Each header-name flag refuses a name with spaces, colons, non-ASCII or nothing at all."""
    message = refused(flag, name)
    assert message.startswith(flag) and "not a header name" in message


def test_header_flags_rename_the_identity_headers() -> None:
    """--user-header and its siblings name the headers stproxy manages."""
    identity = parse(
        "--user-header", "Remote-User", "--email-header", "Remote-Email",
        "--groups-header", "Remote-Groups", "--client-cert-header", "X-Client-DN",
    ).config.auth.identity  # fmt: skip
    assert identity == IdentityHeaders(
        "Remote-User", "Remote-Email", "Remote-Groups", "X-Client-DN"
    )


def test_print_streamlit_config_prints_toml_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--print-streamlit-config writes the trustedUserHeaders lines to standard output and exits with 0."""
    with pytest.raises(SystemExit) as exited:
        parse("--print-streamlit-config", "--user-header", "Remote-User")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out) == {
        "server": {
            "trustedUserHeaders": {
                "Remote-User": "user",
                "X-Forwarded-Email": "email",
                "X-Forwarded-Groups": "groups",
            }
        }
    }


def test_print_streamlit_config_still_checks_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag beside --print-streamlit-config is still a usage error, and nothing is printed."""
    assert "not a header name" in refused("--print-streamlit-config", "--user-header", "a b")
    assert capsys.readouterr().out == ""


def test_config_refuses_password_checkers_on_an_insecure_listener() -> None:
    """The check lives in Config itself: an embedding program cannot skip it."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
    with pytest.raises(ConfigError, match="--allow-insecure-auth"):
        Config(auth=AuthSettings(checkers=(checker,)), listen=("tcp:8500",))
    allowed = Config(
        auth=AuthSettings(checkers=(checker,), allowInsecure=True), listen=("tcp:8500",)
    )
    assert allowed.auth.allowInsecure
    assert Config(auth=AuthSettings(checkers=(checker,)), listen=("unix:/run/s",)).auth.enabled


def test_config_refuses_user_from_cert_without_client_certificates() -> None:
    """Config(auth=AuthSettings(userFromCert=True)) with no client CA anywhere is refused."""
    with pytest.raises(ConfigError, match="--tls-client-ca"):
        Config(auth=AuthSettings(userFromCert=True), listen=("tcp:8500",))
