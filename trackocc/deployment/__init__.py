"""Deployment: the per-frame network as ONNX, streamed with onnxruntime (docs/deployment.md).

- :mod:`.frame_network`: the traceable per-frame network and its host-side rig inputs;
- :mod:`.onnx_export`: ``torch.onnx.export`` of it (custom ops through their PyTorch forms);
- :mod:`.onnx_runner`: the streaming tracker in Python around an onnxruntime session.

onnx / onnxruntime are imported only when a model is exported or run.
"""
from .frame_network import (DYNAMIC_AXES, INPUT_NAMES, OUTPUT_NAMES, FrameGeometry,
                            TrackOccFrameNetwork, frame_geometry, network_inputs)
from .onnx_export import export_frame_network, onnx_session
from .onnx_runner import OnnxStreamingRunner

__all__ = ['TrackOccFrameNetwork', 'FrameGeometry', 'frame_geometry', 'network_inputs',
           'export_frame_network', 'onnx_session', 'OnnxStreamingRunner', 'INPUT_NAMES',
           'OUTPUT_NAMES', 'DYNAMIC_AXES']
