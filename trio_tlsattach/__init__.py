"""trio_tlsattach: libdill-style protocol stacks for Trio.

A byte stream at the bottom (TCP, Unix socket, pipe, socketpair, memory), layers attached on top
(TLS, message framing), and every layer detachable again on a clean shutdown, handing back the
stream underneath with no byte lost. Only public names live here.
"""

from ._base import (
    ByteStream,
    Handle,
    Kind,
    Layer,
    MessageStream,
    StackAttribute,
    TLSAttribute,
    TypedAttribute,
)
from ._deadline import FOREVER, IMMEDIATE, after, now
from ._errors import (
    BadHandle,
    ConnectionBroken,
    DeadlineExceeded,
    InvalidArgument,
    InvalidArgumentType,
    MessageTooLarge,
    NotSupported,
    OutOfStateBlocks,
    ProtocolMismatch,
    SendAfterDone,
    StackError,
    TLSError,
)
from ._framing import FramedStream, mrecv, msend
from ._listener import TLSListener, open_tls_listeners, serve_tls
from ._mem import TLS_SIZE, StateBlock, StateBlockPool
from ._prefix import (
    PREFIX_BIG_ENDIAN,
    PREFIX_LITTLE_ENDIAN,
    PrefixLayer,
    prefix_attach,
    prefix_detach,
)
from ._stack import ProtocolStack
from ._suffix import CRLFLayer, SuffixLayer, suffix_attach, suffix_detach
from ._term import TermLayer, TermStream, term_attach, term_detach, term_done
from ._tls import TLSStream
from ._tlslayer import (
    TLSClientLayer,
    TLSServerLayer,
    tls_attach_client,
    tls_attach_client_mem,
    tls_attach_server,
    tls_attach_server_mem,
    tls_detach,
    tls_done,
)
from ._transports import (
    PipeTransport,
    SocketTransport,
    StreamTransport,
    memory_pair,
    open_pipe,
    open_tcp,
    open_unix,
    pipe_pair,
    socketpair,
    wrap_stream,
)

__all__ = [
    "FOREVER",
    "IMMEDIATE",
    "PREFIX_BIG_ENDIAN",
    "PREFIX_LITTLE_ENDIAN",
    "TLS_SIZE",
    "BadHandle",
    "ByteStream",
    "CRLFLayer",
    "ConnectionBroken",
    "DeadlineExceeded",
    "FramedStream",
    "Handle",
    "InvalidArgument",
    "InvalidArgumentType",
    "Kind",
    "Layer",
    "MessageStream",
    "MessageTooLarge",
    "NotSupported",
    "OutOfStateBlocks",
    "PipeTransport",
    "PrefixLayer",
    "ProtocolMismatch",
    "ProtocolStack",
    "SendAfterDone",
    "SocketTransport",
    "StackAttribute",
    "StackError",
    "StateBlock",
    "StateBlockPool",
    "StreamTransport",
    "SuffixLayer",
    "TLSAttribute",
    "TLSClientLayer",
    "TLSError",
    "TLSListener",
    "TLSServerLayer",
    "TLSStream",
    "TermLayer",
    "TermStream",
    "TypedAttribute",
    "after",
    "memory_pair",
    "mrecv",
    "msend",
    "now",
    "open_pipe",
    "open_tcp",
    "open_tls_listeners",
    "open_unix",
    "pipe_pair",
    "prefix_attach",
    "prefix_detach",
    "serve_tls",
    "socketpair",
    "suffix_attach",
    "suffix_detach",
    "term_attach",
    "term_detach",
    "term_done",
    "tls_attach_client",
    "tls_attach_client_mem",
    "tls_attach_server",
    "tls_attach_server_mem",
    "tls_detach",
    "tls_done",
    "wrap_stream",
]

__version__ = "0.1.0"
