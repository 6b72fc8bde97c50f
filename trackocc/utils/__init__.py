"""Utilities shared by the package and the tools; each is imported from its own module on
first use (``trackocc.utils`` itself imports nothing heavy)."""
from .lazy_exports import lazy_exports

_EXPORTS = {
    'register_checkpoint_safe_globals': '.checkpoint_compat',
    'init_cpu_process_group': '.distributed',
    'adapt_config_to_cpu_distributed': '.distributed',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
