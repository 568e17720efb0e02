"""The `raygke` command: `plan` (the program under mocks), `local` (the stack on this machine), `smoke`.

Every failure a user can cause (a bad stack file, a missing binary, a port in use, an unreachable endpoint)
ends as one clear line on stderr and a non-zero exit, never a traceback. Exit codes: 0 ok, 1 a check
failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from infra.config import ConfigError
from raygke.local import LocalError
from raygke.local_ray import LocalRayError

EXIT_BAD_INPUT = 2


def _plan(args: argparse.Namespace) -> int:
    from raygke import diff
    from raygke.plan import PlanBaseError, plan_at_ref, plan_stack, render_json, render_markdown
    from raygke.plan import render_text as plan_text

    if args.format == "json" and len(args.stack) > 1:
        print(f"raygke: --format json takes one --stack; got {args.stack}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for stack in args.stack:
        started = time.perf_counter()
        head = plan_stack(stack)
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
    return 0


def _local(args: argparse.Namespace) -> int:
    from raygke import local

    if args.action == "up":
        return local.up(
            args.stack,
            ray_defaults=args.ray_defaults,
            state_dir=args.state_dir,
            http_port=args.port,
            grpc_port=args.grpc_port,
        )
    if args.action == "status":
        return local.status(state_dir=args.state_dir)
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
    plan.set_defaults(run=_plan)

    local = commands.add_parser("local", help="run a stack's serving path on this machine")
    local.add_argument("action", choices=["up", "status", "down"])
    local.add_argument(
        "--stack", default="dev", help="the stack whose config to run (default: dev)"
    )
    local.add_argument(
        "--ray-defaults",
        action="store_true",
        help="run Ray's default serving path (no HAProxy ingress, no gRPC transport)",
    )
    local.add_argument(
        "--port", type=int, help="our ingress tier's HTTP port (default: a free one)"
    )
    local.add_argument("--grpc-port", type=int, help="its gRPC port (default: a free one)")
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
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"raygke: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (LocalError, LocalRayError) as exc:  # a local run that could not start or stop
        print(f"raygke: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
