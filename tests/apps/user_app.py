"""
A Streamlit app that shows who ``st.user`` says the viewer is, as stable text for the identity
browser tests (``tests/e2e/test_identity.py``).

With ``server.trustedUserHeaders`` set (what ``python -m stproxy --print-streamlit-config``
prints), Streamlit fills ``st.user`` from the headers of the WebSocket handshake. Each field is
one line, ``(none)`` when absent or empty:

    User: alice
    Email: alice@example.com
    Groups: admins,staff
    Other: (none)

``Other`` lists any further ``st.user`` keys as ``key=value``, sorted, so nothing the headers carry
goes unseen. The ``Rendered`` line comes last: once it shows, the whole script has run.
"""

import streamlit as st

info = st.user.to_dict()


def shown(value: object) -> str:
    return "(none)" if value in (None, "") else str(value)


st.title("stproxy user app")
st.text(f"User: {shown(info.get('user'))}")
st.text(f"Email: {shown(info.get('email'))}")
st.text(f"Groups: {shown(info.get('groups'))}")
others = sorted(
    (key, value) for key, value in info.items() if key not in ("user", "email", "groups")
)
st.text("Other: " + (", ".join(f"{key}={value}" for key, value in others) or "(none)"))
st.text("Rendered: yes")
