"""
The WebSocket side: Streamlit's C{/_stcore/stream} relayed through Autobahn.

C{resource} (the twisted.web resource, and the handshakes it refuses before
Autobahn sees them), C{browser} and C{upstream} (the two
Autobahn protocols of one relayed WebSocket, and their factories),
C{options} (the browser leg's Autobahn options, from the settings),
C{handshake} (the upstream handshake's text), C{relay} (what the two legs
share once joined: message relay, closes, pings), C{passthrough} (data
frames passed on as bytes when no extension was negotiated), C{frames}
(the frame reader it uses: limits, protocol errors, UTF-8), C{timers}
(Autobahn's timers on the proxy's reactor), C{footprint} (what an idle
session keeps in memory: options on a class, lean instance dicts),
C{valve} (backpressure: a leg is not read while what reading it writes cannot
go out) and C{sessions} (every open leg and session of one proxy: the session
record, metrics, the session log line, closing them all on stop).
"""
