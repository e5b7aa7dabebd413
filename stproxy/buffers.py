"""
How much a connection reads at once, and how much it holds for a slow
reader before pausing what feeds it: both legs of a proxied download.

Twisted reads at most C{FileDescriptor.bufferSize} bytes per read and pauses
a streaming producer once more than that waits to be written.  Its 64 KiB
made a 512 MiB download through stproxy 8,192 reads on each leg and a pause
and resume of the upstream read every other chunk.  Measured with the shared
kit (512 MiB, medians of 5, 2026-12-07): 766 MB/s at 64 KiB, 846 at
128 KiB; 32 KiB gave 643, and 256 KiB (532) and 1 MiB (625) were slower
again (reads that large are allocated and freed by C{mmap} each time).

The price is the bound on what one slow client makes the proxy hold:
128 KiB waiting to be written, plus one read.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor

#: Bytes read at once, and held for a slow reader, on each TCP connection.
TRANSFER_BUFFER_SIZE = 128 * 1024

#: How many layers (TLS, connection counting) may wrap the socket's transport.
_WRAPPERS = 3


def useTransferBuffer(transport: object) -> None:
    """
    Give the TCP connection under C{transport} (itself, or below a TLS or
    counting wrapper) the larger buffer; other transports stay as they are.
    """
    for _ in range(_WRAPPERS + 1):
        if isinstance(transport, FileDescriptor):
            transport.bufferSize = TRANSFER_BUFFER_SIZE
            return
        transport = getattr(transport, "transport", None)
        if transport is None:
            return


__all__ = ["TRANSFER_BUFFER_SIZE", "useTransferBuffer"]
