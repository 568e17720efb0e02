"""The smoke benchmark behind `raygke smoke`: gate and measure a deployment from its outputs.

Owns: reading the `smoke` contract, gates, load generation, statistics, reports, plots.
Does not own: the contract's producer (infra/outputs.py, `raygke local up`) or the apps it probes.
It must never import Ray: it runs on CI runners that only have the client-side packages.
"""
