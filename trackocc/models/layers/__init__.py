
from .mask_decoder import MaskDecoder, MaskDecoderLayer  # noqa: F401
from .deformable_attention_3d import DeformableAttention3D  # noqa: F401
from .mask_center_prior import MaskCenterPrior  # noqa: F401
from .mask_feature_upsampler import MaskFeatureUpsampler  # noqa: F401
from .occupancy_encoder import OccupancyEncoder  # noqa: F401
from .occupancy_encoder_layer import OccupancyEncoderLayer  # noqa: F401
from .positional_encoding_3d import LearnedPositionalEncoding3D  # noqa: F401
from .spatial_cross_attention import (ImageDeformableSampling,  # noqa: F401
                                      SpatialCrossAttention, project_points_to_images)
