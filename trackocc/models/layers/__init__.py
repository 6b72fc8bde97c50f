
from .mask_decoder import MaskDecoder, MaskDecoderLayer  # noqa: F401
