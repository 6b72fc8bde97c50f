import sys
from pathlib import Path

# toy_runner_parts is imported by name through custom_imports
sys.path.insert(0, str(Path(__file__).parent))
