from . import (backbones, data_preprocessors, detectors, heads, layers, losses,  # noqa: F401
               necks, refiners, trackers)
