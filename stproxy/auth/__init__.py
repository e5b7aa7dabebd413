"""Identity at the edge: who a request is from, and what Streamlit is told."""
