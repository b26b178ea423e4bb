"""Entry point of `pulumi up` / `pulumi preview` / `pulumi destroy` (run from infra/)."""

import sys
from pathlib import Path

# Pulumi runs this directory as a script, which puts infra/ itself first on sys.path: there
# infra/packaging.py would shadow the `packaging` distribution the Pulumi SDK imports. Load the
# program as the `infra` package from the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import pulumi  # noqa: E402

from infra.config import load_config  # noqa: E402
from infra.program import build  # noqa: E402

stack = build(load_config())
for key, value in stack.outputs.items():
    pulumi.export(key, value)
