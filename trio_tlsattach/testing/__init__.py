"""Testing kit for trio_tlsattach: fixtures, transport pairs, and the layer conformance check.

The pytest plugin (registered as ``trio_tlsattach``) provides the fixtures ``tls_ca``,
``tls_server_cert``, ``server_ssl_context``, ``client_ssl_context`` and ``transport_pair``.
The runtime package never imports this module.
"""

from ._check import check_layer
from ._pairs import TRANSPORT_PAIRS, attach_both, tcp_pair, tls_pair, unix_pair
from ._passthrough import PassThroughLayer, PassThroughStream

__all__ = [
    "TRANSPORT_PAIRS",
    "PassThroughLayer",
    "PassThroughStream",
    "attach_both",
    "check_layer",
    "tcp_pair",
    "tls_pair",
    "unix_pair",
]
