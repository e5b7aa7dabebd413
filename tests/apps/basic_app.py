"""A tiny Streamlit app for the HTTP and browser tests: a title, a button and some text."""

import streamlit as st

st.title("stproxy basic app")
st.write("Hello from behind the proxy.")

if "clicks" not in st.session_state:
    st.session_state.clicks = 0

if st.button("Click me"):
    st.session_state.clicks += 1

st.text(f"Clicks: {st.session_state.clicks}")
