"""
The C{htpasswd} checker factory for C{--auth htpasswd:PATH}, beside
twisted.cred's C{memory:} and C{file:}.

Like stproxy's own dropin it imports nothing of stproxy until it is used, so
a plugin scan (C{twistd --help}) never depends on stproxy importing cleanly.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory, InvalidAuthArgumentString
from twisted.plugin import IPlugin
from zope.interface import implementer

HELP = """
Checks HTTP Basic credentials against an htpasswd file of bcrypt hashes,
one user:hash line per user, as `htpasswd -B` writes them (or user: plus
the output of `caddy hash-password`). Blank lines and # comments are
skipped. MD5 ($apr1$), SHA-1 ({SHA}), crypt and clear-text lines are
refused at start-up with their line number. The file is reloaded when it
changes; a file that no longer parses keeps the users last loaded.
"""


@implementer(ICheckerFactory, IPlugin)
class HtpasswdCheckerFactory:
    """Makes an L{stproxy.auth.htpasswd.HtpasswdChecker} of the file named after C{htpasswd:}."""

    authType = "htpasswd"
    authHelp = HELP
    argStringFormat = "A path to an htpasswd file of bcrypt hashes"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str) -> ICredentialsChecker:
        """
        The checker for the file at C{argstring}.

        @raise InvalidAuthArgumentString: with the one-line reason (the file
            and line), which C{strcred.AuthOptionMixin} turns into a usage error.
        """
        from stproxy.auth.htpasswd import HtpasswdChecker, HtpasswdError

        if not argstring.strip():
            raise InvalidAuthArgumentString("htpasswd: needs the path of a file, htpasswd:PATH")
        try:
            return HtpasswdChecker(argstring)
        except HtpasswdError as e:
            raise InvalidAuthArgumentString(str(e)) from None


theHtpasswdCheckerFactory = HtpasswdCheckerFactory()
