"""Testing kit for trio_tlsattach: fixtures, transport pairs, and the layer conformance check.

* :func:`check_layer` runs Trio's stream conformance checks and libdill's attach/detach/deadline
  contract on any layer; every layer's tests call it first.
* :class:`PassThroughLayer` is a layer that changes nothing: the reference for writing one;
  :class:`MessagePassThroughLayer` is its counterpart on message streams.
* :func:`tcp_pair`, :func:`unix_pair`, ``TRANSPORT_PAIRS``, :func:`attach_both` and
  :func:`tls_pair` build connected pairs outside fixtures; :func:`stack_pair` builds two
  connected :class:`~trio_tlsattach.ProtocolStack` with layers pushed on both ends.
* The pytest plugin (entry point ``trio_tlsattach``, active once the package is installed)
  provides the fixtures ``tls_ca``, ``tls_server_cert``, ``server_ssl_context``,
  ``client_ssl_context`` and ``transport_pair``.

The runtime package never imports this one.
"""

from ._check import AttachPair, TransportPairSpec, check_layer, close_stack_of
from ._pairs import TRANSPORT_PAIRS, attach_both, stack_pair, tcp_pair, tls_pair, unix_pair
from ._passthrough import (
    MessagePassThroughLayer,
    MessagePassThroughStream,
    PassThroughLayer,
    PassThroughStream,
)

__all__ = [
    "TRANSPORT_PAIRS",
    "AttachPair",
    "MessagePassThroughLayer",
    "MessagePassThroughStream",
    "PassThroughLayer",
    "PassThroughStream",
    "TransportPairSpec",
    "attach_both",
    "check_layer",
    "close_stack_of",
    "stack_pair",
    "tcp_pair",
    "tls_pair",
    "unix_pair",
]
