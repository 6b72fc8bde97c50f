from .checkpoint_compat import register_checkpoint_safe_globals
from .distributed import adapt_config_to_cpu_distributed, init_cpu_process_group

__all__ = ['register_checkpoint_safe_globals', 'init_cpu_process_group',
           'adapt_config_to_cpu_distributed']
