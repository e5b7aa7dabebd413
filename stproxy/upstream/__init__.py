"""
Where requests go: the Streamlit server behind the proxy.

C{address} (the upstream's scheme, host and port), C{client} (the HTTP client
and connection pool both legs share), C{resolution} (the addresses its name
stands for, looked up on a timer rather than per connection) and C{tls} (how
an C{https://} upstream is verified).  Today one address; the replicas work
will put several here.
"""
