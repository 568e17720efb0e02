"""Profiles (`quick`, `full`) and the load plan they produce for a deployment.

Owns: which targets and levels run, for how long, with how many client processes, the open-loop
rates derived from measured closed-loop peaks (the LLM's request-rate sweep among them) and the LLM
workloads beside the synthetic one. Does not own: running them (load.py, llm.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from raygke.smoke.contract import SmokeContract
from raygke.smoke.llm import LlmLoadSpec, Workload, turn_lengths
from raygke.smoke.load import LoadSpec, Mode, Transport


@dataclass(frozen=True)
class Profile:
    name: str
    levels: tuple[int, ...]  # closed-loop concurrencies, besides the SLO's (always run)
    duration_s: float
    warmup_s: float
    timeout_s: float
    open_fractions: tuple[float, ...]  # open-loop rates as fractions of the closed-loop peak
    open_all_unary: bool  # open loop on every echo unary target, or only the first HTTP one
    repeats: int  # per level; --compare interleaves A and B within each repeat
    payload_size: int = 1024
    chunks: int = 20
    chunk_size: int = 64
    rows: int = 32
    processes: int = 0  # 0: decided per level by auto_processes
    llm_levels: tuple[int, ...] = ()  # LLM closed-loop concurrencies, besides the SLO's
    # Prompts per closed-loop stream (a level sends at least MIN_LLM_PROMPTS).
    llm_prompts_per_user: int = 4
    # LLM lengths drawn uniformly within +-this fraction of slo.llm's (vLLM's --random-range-ratio).
    llm_range_ratio: float = 0.0
    # The LLM's request-rate sweep: Poisson arrivals at these fractions of the closed-loop peak.
    llm_rate_fractions: tuple[float, ...] = (0.5,)
    # LLM workloads beside the synthetic one, at the SLO's concurrency (llm.WORKLOADS).
    llm_workloads: tuple[Workload, ...] = ()


# quick: the CI gate; seconds per level, so it fits in 2 minutes on 2 cores with Ray beside it.
QUICK = Profile(
    name="quick",
    levels=(),
    duration_s=4.0,
    warmup_s=1.0,
    timeout_s=10.0,
    open_fractions=(0.5,),
    open_all_unary=False,
    repeats=1,
)
FULL = Profile(
    name="full",
    levels=(1, 8, 32, 128),
    duration_s=10.0,
    warmup_s=2.0,
    timeout_s=30.0,
    open_fractions=(0.25, 0.5, 0.75),
    open_all_unary=True,
    repeats=3,
    llm_levels=(1, 8, 32),
    llm_prompts_per_user=8,
    # up to a quarter past the peak: the knee is the highest rate still within the SLO
    llm_rate_fractions=(0.25, 0.5, 0.75, 1.0, 1.25),
    llm_workloads=("shared-prefix", "multi-turn"),
)
PROFILES = {p.name: p for p in (QUICK, FULL)}


def auto_processes(concurrency: int, cpus: int | None = None) -> int:
    """Client processes for a level: one asyncio process handles tens of users; more for more.

    Capped at a quarter of the machine's cores so the client never starves a server beside it.
    """
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    if concurrency <= 32:
        return 1
    return max(1, min(4, cores // 4, concurrency // 32))


def targets(contract: SmokeContract) -> list[tuple[str, Transport, Mode]]:
    """(app name, transport, mode) for every app the load phase can drive (llm is gated only)."""
    echo: tuple[tuple[Transport, Mode], ...] = (
        ("http", "unary"),
        ("grpc", "unary"),
        ("http", "stream"),
        ("grpc", "stream"),
    )
    recsys: tuple[tuple[Transport, Mode], ...] = (("http", "unary"), ("grpc", "unary"))
    found: list[tuple[str, Transport, Mode]] = []
    for app in contract.apps:
        shapes: tuple[tuple[Transport, Mode], ...] = (
            echo if app.kind == "echo" else recsys if app.kind == "recsys" else ()
        )
        for transport, mode in shapes:
            if transport == "http" or app.grpc:
                found.append((app.name, transport, mode))
    return found


def closed_levels(contract: SmokeContract, profile: Profile) -> list[int]:
    return sorted({*profile.levels, contract.slo.concurrency})


def closed_specs(contract: SmokeContract, profile: Profile) -> list[LoadSpec]:
    """Closed-loop specs, target by target, levels ascending."""
    apps = {app.name: app for app in contract.apps}
    specs: list[LoadSpec] = []
    for name, transport, mode in targets(contract):
        for level in closed_levels(contract, profile):
            specs.append(
                LoadSpec(
                    app=apps[name],
                    transport=transport,
                    mode=mode,
                    loop="closed",
                    concurrency=level,
                    duration_s=profile.duration_s,
                    warmup_s=profile.warmup_s,
                    timeout_s=profile.timeout_s,
                    payload_size=profile.payload_size,
                    chunks=profile.chunks,
                    chunk_size=profile.chunk_size,
                    rows=profile.rows,
                    processes=profile.processes or auto_processes(level),
                )
            )
    return specs


def open_specs(
    contract: SmokeContract, profile: Profile, peaks: dict[str, float]
) -> list[LoadSpec]:
    """Open-loop specs at fractions of each echo unary target's measured peak (req/s).

    `peaks` maps `LoadSpec.target` to the best closed-loop throughput seen; targets without a
    positive peak (everything failed) get no open-loop level.
    """
    apps = {app.name: app for app in contract.apps}
    chosen: list[tuple[str, Transport]] = [
        (name, transport)
        for name, transport, mode in targets(contract)
        if mode == "unary" and apps[name].kind == "echo"
    ]
    if not profile.open_all_unary:
        chosen = [t for t in chosen if t[1] == "http"][:1]
    specs: list[LoadSpec] = []
    for name, transport in chosen:
        peak = peaks.get(f"{name}/{transport}/unary", 0.0)
        if peak <= 0:
            continue
        for fraction in profile.open_fractions:
            rate = max(1.0, round(peak * fraction))
            specs.append(
                LoadSpec(
                    app=apps[name],
                    transport=transport,
                    mode="unary",
                    loop="open",
                    rate=rate,
                    duration_s=profile.duration_s,
                    warmup_s=profile.warmup_s,
                    timeout_s=profile.timeout_s,
                    payload_size=profile.payload_size,
                    processes=profile.processes or (1 if rate <= 2000 else auto_processes(64)),
                )
            )
    return specs


MIN_LLM_PROMPTS = 16  # fewer samples than this make a p99 of one request's luck


def llm_specs(
    contract: SmokeContract, profile: Profile, models: dict[str, str]
) -> list[LlmLoadSpec]:
    """Closed-loop LLM levels for every llm app with a model to ask for (`models`: app name -> id),
    at the lengths and concurrency of the contract's `slo.llm` (none in a version 1 contract)."""
    slo = contract.slo.llm
    if slo is None:
        return []
    return [
        LlmLoadSpec(
            app=app,
            model=models[app.name],
            loop="closed",
            concurrency=level,
            num_prompts=max(MIN_LLM_PROMPTS, level * profile.llm_prompts_per_user),
            input_tokens=slo.input_tokens,
            output_tokens=slo.output_tokens,
            range_ratio=profile.llm_range_ratio,
        )
        for app in contract.apps
        if app.kind == "llm" and app.name in models
        for level in sorted({*profile.llm_levels, slo.concurrency})
    ]


def llm_open_specs(
    closed: list[LlmLoadSpec], profile: Profile, peaks: dict[str, float]
) -> list[LlmLoadSpec]:
    """The request-rate sweep: Poisson arrivals at `llm_rate_fractions` of each app's closed-loop
    peak (req/s, `peaks` by app name), shaped like its largest closed level; at most 4x that
    level's streams in flight. Rates ascending, each at least 0.01/s."""
    widest: dict[str, LlmLoadSpec] = {}
    for spec in closed:
        if (
            spec.workload == "synthetic"
            and spec.concurrency >= widest.get(spec.app.name, spec).concurrency
        ):
            widest[spec.app.name] = spec
    return [
        replace(
            spec,
            loop="open",
            rate=max(0.01, round(peaks[name] * fraction, 2)),
            fraction=fraction,
            concurrency=4 * spec.concurrency,
        )
        for name, spec in widest.items()
        if peaks.get(name, 0.0) > 0
        for fraction in sorted(profile.llm_rate_fractions)
    ]


def llm_workload_specs(
    closed: list[LlmLoadSpec], profile: Profile, concurrency: int
) -> list[LlmLoadSpec]:
    """The profile's workloads beside the synthetic one, each shaped like the app's synthetic
    level at the SLO's `concurrency` (so their TTFT and TPOT read against it). Multi-turn sends
    whole conversations: its prompts are rounded up to a multiple of its turns."""
    specs = []
    for spec in closed:
        if spec.workload != "synthetic" or spec.concurrency != concurrency:
            continue
        for workload in profile.llm_workloads:
            shaped = replace(spec, workload=workload)
            if workload == "multi-turn":
                turns = turn_lengths(shaped)[0]
                shaped = replace(shaped, num_prompts=-(-spec.num_prompts // turns) * turns)
            specs.append(shaped)
    return specs


def with_overrides(
    profile: Profile,
    duration_s: float | None = None,
    warmup_s: float | None = None,
    levels: tuple[int, ...] | None = None,
    repeats: int | None = None,
    processes: int | None = None,
    llm_range_ratio: float | None = None,
    llm_rate_fractions: tuple[float, ...] | None = None,
    llm_workloads: tuple[Workload, ...] | None = None,
) -> Profile:
    """The profile with command-line overrides applied (None keeps the profile's value)."""
    changes = {
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "levels": levels,
        "repeats": repeats,
        "processes": processes,
        "llm_range_ratio": llm_range_ratio,
        "llm_rate_fractions": llm_rate_fractions,
        "llm_workloads": llm_workloads,
    }
    return replace(profile, **{k: v for k, v in changes.items() if v is not None})
