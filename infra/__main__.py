"""Entry point `pulumi up -s <stack>` runs: validate the stack config, define the stack, export its outputs."""

import pulumi

from infra.program import run_program

for key, value in run_program().items():
    pulumi.export(key, value)
