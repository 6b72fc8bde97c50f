"""The paper config's model and one preprocessed 3-frame training clip on the CPU, with the
feature networks once per clip (``clip_feature_batch``, on by default on a GPU only); shared
by ``train_op_census.py`` and ``train_traffic.py``, which run it with the 3D convolutions on
the GPU's code path (``trackocc.analysis.train_ops.native_3d_convolutions``)."""
from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.utils.synthetic_inputs import synthetic_batch


def model_and_clip(config: str):
    """``(model, data)``: the config's model (random weights, training mode) and the
    data preprocessor's output for one synthetic 3-frame clip with ground truth."""
    cfg = load_config(config)
    quiet_logger()
    model = build_model(cfg, None, 'cpu').train()
    model.clip_feature_batch = True  # a GPU's default (on the CPU it is off by default)
    return model, model.data_preprocessor(synthetic_batch(model, 3, with_gt=True), True)
