"""
What an idle relayed WebSocket keeps in memory, kept small (issue #13: two
thousand idle sessions, under 15 KB of proxy memory each).

An Autobahn connection is an instance with over a hundred attributes: its
factory's options, copied onto each (about 30 per leg), its per-connection
state, and the parsed opening handshake, in an instance dict that grows to
3 KB.  So:

  - L{ClassOptions}: a factory's connections are of a subclass of its
    protocol that holds its options as class attributes, which Autobahn
    then copies onto no connection (L{stproxy._autobahn.optionNames}).
  - L{lighten}, once a leg is open: the handshake goes
    (L{stproxy._autobahn.LeanProtocol.forgetHandshake}), and so does every
    attribute whose value is the very object its class has (Autobahn's
    state at its starting values, class attributes of
    L{stproxy._autobahn.LeanProtocol}; stproxy's own defaults); the
    instance dict shrinks to what is left.

One client factory serves every upstream leg to one upstream
(L{stproxy.websocket.upstream.UpstreamFactories}).
"""

from __future__ import annotations

from typing import Any

from stproxy._autobahn import LeanProtocol, optionNames


class ClassOptions:
    """
    Mixed in before an Autobahn factory class: its connections are of a
    subclass of its C{protocol} holding its options as class attributes
    (functions as static methods), made again when they change; so a
    connection reads an option the factory had when it was made, as it
    would read its own copy.
    """

    protocol: Any
    _made: tuple[Any, dict[str, object], Any] | None = None

    def buildProtocol(self, addr: object) -> Any:
        base = self.protocol
        options = {name: getattr(self, name) for name in optionNames(base)}
        made = self._made
        if made is None or made[0] is not base or made[1] != options:
            names = {"__module__": base.__module__, "__qualname__": base.__qualname__}
            for name, value in options.items():
                names[name] = staticmethod(value) if hasattr(value, "__get__") else value
            made = self._made = (base, options, type(base.__name__, (base,), names))
        protocol = made[2]()
        protocol.factory = self
        return protocol


#: Values an instance can share with its class: never changed in place.
_IMMUTABLE = (type(None), int, str, bytes, tuple)


def lighten(leg: LeanProtocol) -> None:
    """
    Once C{leg} is open: keep in its instance dict only what its class does
    not have already (a value of None, a number, a string, bytes or a tuple
    that is the very object its class has goes), less the handshake, in a dict no
    bigger than that needs.
    """
    leg.forgetHandshake()
    state, cls = vars(leg), type(leg)
    for name, value in list(state.items()):
        if isinstance(value, _IMMUTABLE) and getattr(cls, name, state) is value:
            del state[name]
    leg.__dict__ = dict(state)


__all__ = ["ClassOptions", "lighten"]
