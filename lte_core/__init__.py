"""Pure computation of Long-Term Embeddings: basis, lagged-window state, encoders, codecs.

Nothing here opens a socket or imports the streaming or serving layers.
"""

from lte_core.basis import BasisArtifact
from lte_core.encoders import Encoded, Encoder, EncoderSpec, MeanEncoder, RecencyEncoder
from lte_core.errors import LTEError
from lte_core.state import LaggedWindow
from lte_core.update import LTEUpdate
from lte_core.window import WindowSpec

__all__ = [
    "BasisArtifact",
    "Encoded",
    "Encoder",
    "EncoderSpec",
    "LTEError",
    "LTEUpdate",
    "LaggedWindow",
    "MeanEncoder",
    "RecencyEncoder",
    "WindowSpec",
]
