"""The `raygke` command: `plan` (the program under mocks), `local` (the stack on this machine), `smoke`.

Every failure a user can cause (a bad stack file, a missing binary, a port in use, an unreachable endpoint)
ends as one clear line on stderr and a non-zero exit, never a traceback. Exit codes: 0 ok, 1 a check
failed (for `plan`: a policy control at or above `--fail-on`), 2 bad input. No message shows a secret
value of the stack config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, get_args

from infra.config import ServeProfile
from infra.stack_file import ConfigError, redact
from raygke.local import LocalError
from raygke.local_prometheus import PrometheusError
from raygke.local_ray import LocalRayError
from raygke.tier import TierError

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
MAX_DETAIL_CHARS = 300  # of an unexpected exception's text, which may quote what it was handed
# `plan --fail-on`: which policy violations make the exit code 1 (the plan is printed either way).
FAIL_ON = {"mandatory": ("mandatory",), "advisory": ("mandatory", "advisory"), "never": ()}
# Keys `raygke local status|down` read from a run's state file.
_STATE_KEYS = ("stack", "profile", "pids", "ray")


class BadInput(ValueError):
    """An argument or file the user gave that cannot work; one line, exit 2."""


def _tcp_port(text: str) -> int:
    """argparse type of --port/--grpc-port: a TCP port a listener can bind (0 would mean "any")."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a TCP port 1-65535; got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 1-65535; got {port}")
    return port


def _worker_count(text: str) -> int:
    """argparse type of --workers: how many Ray worker nodes the local run starts."""
    from raygke.local import MAX_WORKERS

    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number 0-{MAX_WORKERS}; got {text!r}"
        ) from None
    if not 0 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"must be 0 (one node holds everything) to {MAX_WORKERS}; got {count}"
        )
    return count


def _plan(args: argparse.Namespace) -> int:
    from raygke import diff
    from raygke.plan import PlanBaseError, plan_at_ref, plan_stack, render_json, render_markdown
    from raygke.plan import render_text as plan_text

    if args.format == "json" and len(args.stack) > 1:
        print(f"raygke: --format json takes one --stack; got {args.stack}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stacks_dir = Path(args.stacks_dir) if args.stacks_dir else None
    failing: list[str] = []
    for stack in args.stack:
        started = time.perf_counter()
        head = plan_stack(stack, stacks_dir)
        if args.base is None:
            render = {"text": plan_text, "json": render_json, "markdown": render_markdown}[
                args.format
            ]
            print(render(head))
        else:
            try:
                base = plan_at_ref(stack, args.base)
                # round-trip the head through JSON so both sides are compared in the same form
                changes = diff.diff_plans(base, json.loads(render_json(head)), base_ref=args.base)
            except (PlanBaseError, diff.PlanDocumentError) as exc:
                print(f"raygke: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            render = {
                "text": diff.render_text,
                "json": diff.render_json,
                "markdown": diff.render_markdown,
            }[args.format]
            print(render(changes))
        print(
            f"planned {stack}{'' if args.base is None else f' and its base {args.base}'} in "
            f"{time.perf_counter() - started:.1f} s under Pulumi mocks (nothing was created)",
            file=sys.stderr,
        )
        gate = [v for v in head.violations if v.severity in FAIL_ON[args.fail_on]]
        if gate:
            ids = ", ".join(sorted({v.control_id for v in gate}))
            failing.append(f"{stack} ({len(gate)}: {ids})")
    if failing:
        print(
            f"raygke: policy controls at or above --fail-on {args.fail_on} failed for "
            f"{'; '.join(failing)}; see the policy block above",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return 0


def _local_state(state_dir: Path) -> dict[str, Any] | None:
    """The run recorded in `state_dir`, None if there is none; LocalError if its file is damaged."""
    from raygke import local

    path = state_dir / "state.json"
    try:
        state = local.read_state(state_dir)
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise LocalError(
            f"{path} is not a local run's state (not JSON: {exc}); stop its processes by hand "
            f"and remove {state_dir}"
        ) from None
    if state is None:
        return None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not all(isinstance(p, int) for p in state["pids"]):
        raise LocalError(
            f"{path} is not a local run's state (missing or bad keys: {missing or ['pids']}); "
            f"stop its processes by hand and remove {state_dir}"
        )
    return state


def _local(args: argparse.Namespace) -> int:
    from raygke import local

    state_dir = Path(args.state_dir or local.DEFAULT_STATE_DIR)
    if state_dir.exists() and not state_dir.is_dir():
        raise BadInput(f"--state-dir {state_dir} is a file, not a directory")
    if args.port is not None and args.port == args.grpc_port:
        raise BadInput(f"--port and --grpc-port must differ; both are {args.port}")
    if args.prometheus and args.action != "up":
        raise BadInput(
            f"--prometheus starts with the run: `raygke local up --prometheus`, not {args.action}"
        )
    state = _local_state(state_dir)  # a damaged state file fails here, before anything starts
    if args.action == "status" and state is None:
        print(
            f"raygke: no local run in {state_dir.resolve()}; start one with `raygke local up`",
            file=sys.stderr,
        )
        return 1
    if args.action == "upgrade":
        from raygke.local_upgrade import upgrade

        if state is None:
            raise BadInput(
                f"no local run in {state_dir.resolve()} to upgrade; start one with `raygke local up`"
            )
        return upgrade(args.stack or state["stack"], profile=args.profile, state_dir=args.state_dir)
    if args.action == "up":
        return local.up(
            args.stack or "dev",
            profile=args.profile,
            state_dir=args.state_dir,
            http_port=args.port,
            grpc_port=args.grpc_port,
            workers=args.workers,
            prometheus=args.prometheus,
        )
    if args.action == "status":
        return local.status(state_dir=args.state_dir)
    if args.action == "check-queries":
        from raygke.observe import check_run

        if state is None:
            raise BadInput(
                f"no local run in {state_dir.resolve()}; start one with `raygke local up --prometheus`"
            )
        return check_run(state)
    return local.down(state_dir=args.state_dir)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="raygke", description=(__doc__ or "").split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="print what `pulumi up` would create, under mocks")
    plan.add_argument(
        "--stack",
        required=True,
        action="append",
        help="dev, staging or prod (stacks/Pulumi.<stack>.yaml); repeat for several",
    )
    plan.add_argument(
        "--base",
        metavar="GIT_REF",
        help="diff against the plan at this git ref (planned in a temporary worktree): added, removed, "
        "replaced and changed resources, outputs and the change in GPU cost",
    )
    plan.add_argument(
        "--format",
        choices=["text", "json", "markdown"],
        default="text",
        help="text (default), json (versioned) or markdown (a PR comment body)",
    )
    plan.add_argument(
        "--fail-on",
        choices=list(FAIL_ON),
        default="mandatory",
        help="exit 1 when a policy control of this severity or higher fails: mandatory (default), "
        "advisory (any violation) or never (report only)",
    )
    plan.add_argument(
        "--stacks-dir",
        metavar="DIR",
        help="where the Pulumi.<stack>.yaml files are (default: this project's stacks/)",
    )
    plan.set_defaults(run=_plan)

    local = commands.add_parser("local", help="run a stack's serving path on this machine")
    local.add_argument(
        "action",
        choices=["up", "status", "upgrade", "check-queries", "down"],
        help="upgrade: move the running run to the stack's config as it is now, through a second "
        "Ray cluster, as KubeRay's NewCluster upgrade does; check-queries: evaluate every "
        "dashboard query and alert of the stack against the run's Prometheus (`up --prometheus`), "
        "exit 1 naming each panel or alert that returned nothing",
    )
    local.add_argument(
        "--stack",
        help="the stack whose config to run (default: dev; for upgrade, the running one's)",
    )
    local.add_argument(
        "--profile",
        choices=get_args(ServeProfile),
        help="run the stack under another serveProfile: flags-only (Ray's two flags, nothing "
        "else) or ray-defaults (no HAProxy ingress, no gRPC transport); default: the stack's",
    )
    local.add_argument(
        "--port", type=_tcp_port, help="our ingress tier's HTTP port (default: a free one)"
    )
    local.add_argument("--grpc-port", type=_tcp_port, help="its gRPC port (default: a free one)")
    local.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help="Ray worker nodes beside a head with num-cpus 0, as a RayService runs "
        "(default: 2; 0: one node holds everything)",
    )
    local.add_argument(
        "--prometheus",
        action="store_true",
        help="up: also start a Prometheus on 127.0.0.1 (Debian's `prometheus`) that scrapes the run "
        "as the stack's PodMonitorings scrape the cluster; `down` stops it",
    )
    local.add_argument(
        "--state-dir",
        default=None,
        help="where the run keeps its state (default: .raygke/local in this directory)",
    )
    local.set_defaults(run=_local)

    commands.add_parser(
        "smoke", help="gate and benchmark a deployment (see `raygke smoke --help`)", add_help=False
    )
    return root


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["smoke"]:
        from raygke.smoke.cli import main as smoke_main

        return smoke_main(argv[1:])
    args = parser().parse_args(argv)  # bad arguments: usage and one error line, exit 2
    try:
        return args.run(args)
    except (ConfigError, BadInput) as exc:
        print(f"raygke: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # A local run that could not start or stop.
    except (LocalError, LocalRayError, TierError, PrometheusError) as exc:
        print(f"raygke: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a path we could not create or read, a port we could not bind
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"raygke: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Exception as exc:
        # Never a traceback for a user; RAYGKE_TRACEBACK=1 shows where it came from.
        if os.environ.get("RAYGKE_TRACEBACK") == "1":
            raise
        # An exception's text may quote config it was handed: secrets masked, and cut short.
        detail = " ".join(redact(str(exc)).split()) or "no message"
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
        print(
            f"raygke: unexpected {type(exc).__name__}: {detail} (RAYGKE_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
