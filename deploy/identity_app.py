"""
The identity demo behind oauth2-proxy (``deploy/compose.oauth2-proxy.yaml``): who ``st.user``
says the viewer is.

stproxy asks oauth2-proxy about every request and the WebSocket handshake, and passes the signed-in
user on as ``X-Forwarded-User``, ``-Email`` and ``-Groups``; Streamlit reads those headers into
``st.user`` because ``deploy/streamlit-identity.toml`` (``python -m stproxy
--print-streamlit-config``) names them in ``server.trustedUserHeaders``. Each field is one line,
``(none)`` when the headers did not carry it:

    User: 5f0c8d3e-6a41-4b7e-9c2d-8e1f2a3b4c5d
    Email: alice@example.com
    Groups: admins,staff

(oauth2-proxy's user is the ID token's ``sub`` claim, the provider's stable ID for the account.)

Any further ``st.user`` keys follow as ``key=value``, so nothing the headers carry goes unseen.
"""

import streamlit as st

#: The st.user keys stproxy fills (the values of server.trustedUserHeaders).
FIELDS = ("user", "email", "groups")


def shown(value: object) -> str:
    return "(none)" if value in (None, "") else str(value)


info = st.user.to_dict()

st.title("Who am I?")
for key in FIELDS:
    st.text(f"{key.capitalize()}: {shown(info.get(key))}")
others = sorted((key, value) for key, value in info.items() if key not in FIELDS)
st.text("Other: " + (", ".join(f"{key}={shown(value)}" for key, value in others) or "(none)"))

if info.get("user"):
    # oauth2-proxy's own page, routed to it by stproxy's --forward-auth-passthrough /oauth2/.
    st.caption("Signed in through oauth2-proxy. [Sign out](/oauth2/sign_out)")
else:
    st.warning(
        "No user arrived with this session. Streamlit fills st.user from the headers named in"
        " server.trustedUserHeaders (.streamlit/config.toml), which only stproxy may send:"
        " open the app through stproxy, not Streamlit's own port."
    )
