"""The live tests' bounds on waiting, in one place, each saying what it covers.

Every wait in a live test ends on its condition; a bound only turns a hang into a failure that says
what was awaited. So each is set well above what a loaded 2-core machine takes (`make test-busy`),
and none is a performance threshold. The product's own waits carry their own bounds
(raygke/local_ray.py, raygke/tier.py, raygke/local.py); a test that runs the product adds CLI_START_S.
"""

from __future__ import annotations

from raygke import local

# A `raygke` command's (or another child Python's) interpreter start and imports before it does
# anything: a few seconds idle, tens under load.
CLI_START_S = 60.0
# `raygke local up` / `down` as a subprocess: the product's own bounds, plus its start.
LOCAL_UP_S = local.up_bound_s() + CLI_START_S
LOCAL_DOWN_S = local.DOWN_BOUND_S + CLI_START_S
# One request to a local run or a test server (a unary call, a short stream, a page of stats).
REQUEST_S = 30.0
# A process told to stop (SIGTERM, haproxy's `-sf`, a preStop's end) until it is gone.
PROCESS_EXIT_S = 30.0
# A change the local cluster makes by itself, seen from outside: a replica replaced, our tier or
# Ray's HAProxy marking a server UP or DOWN, Serve moving replicas, a node rejoining.
CLUSTER_CHANGE_S = 120.0
# `raygke smoke --profile quick` as a subprocess: each of its levels is bounded by its own
# deadline (raygke/smoke/load.py); the prod stack's three apps and LLM phase add up to this.
SMOKE_S = 600.0
