"""Paths of the repository and loading its scripts (tools/, test helpers) as modules, for
tests that call a tool's ``main`` in-process. Importable because pytest puts tests/ (the
folder of the root conftest.py) on ``sys.path``."""
import importlib.util
import os.path as osp
from types import ModuleType

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_module(path: str, name: str) -> ModuleType:
    """Execute the file ``path`` (absolute, or relative to the repository) as module
    ``name``."""
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
