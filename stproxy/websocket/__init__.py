"""
The WebSocket side: Streamlit's C{/_stcore/stream} relayed through Autobahn.

C{resource} (the twisted.web resource and the browser-side factory),
C{browser} and C{upstream} (the two Autobahn protocols of one relayed
WebSocket), C{handshake} (the upstream handshake's text), C{relay} (what the
two legs share once joined), C{valve} (backpressure) and C{session} (what a
session's log line and metrics report).
"""
