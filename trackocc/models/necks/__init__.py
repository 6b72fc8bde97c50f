from .depth_net import DepthNet  # noqa: F401
from .lss_fpn3d import LSSFPN3D  # noqa: F401
from .lss_view_transformer import LSSViewTransformerBEVDepth  # noqa: F401
