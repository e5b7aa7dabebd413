#!/bin/sh
# Run the demo: Streamlit on 127.0.0.1:8501 (not exposed), stproxy in front of it on port 8500.
# Ctrl-C stops both.  Expects `streamlit` and `twistd` on PATH (the README's venv).
set -eu
cd "$(dirname "$0")"
streamlit run demo_app.py --server.address 127.0.0.1 --server.port 8501 \
    --server.headless true --browser.gatherUsageStats false &
streamlit_pid=$!
trap 'kill $streamlit_pid 2>/dev/null' EXIT INT TERM
echo "Open http://localhost:8500/ (stproxy -> Streamlit on 127.0.0.1:8501)"
twistd -n --pidfile= stproxy --upstream 127.0.0.1:8501 --listen tcp:8500 --access-log -
