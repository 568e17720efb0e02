"""app/tiny_llm.py: the model files load with transformers as vLLM loads them, the tokenizer
round-trips text, the chat template renders, and writing is deterministic and idempotent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from app.tiny_llm import BOS_TOKEN, EOS_TOKEN, MAX_POSITIONS, tiny_llm_files, write_tiny_llm

pytestmark = pytest.mark.pure

FILES = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llm")
    assert set(write_tiny_llm(directory)) == FILES
    return directory


def test_config_is_the_llama_shape_vllm_runs_on_cpu(model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(model_dir)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers) == (128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 2, 64)
    assert config.max_position_embeddings == MAX_POSITIONS
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert config.vocab_size == len(tokenizer), "every id the random weights emit must decode"
    assert 256 < config.vocab_size <= 320
    assert (config.bos_token_id, config.eos_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )


@pytest.mark.parametrize(
    "text", ["The quick brown fox.", "  two  spaces\nand a newline", "Ünïcode ✓ 日本語 🙂", ""]
)
def test_tokenizer_round_trips_text(model_dir: Path, text: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids(BOS_TOKEN)  # as Llama's tokenizers do
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(ids[1:]) == text


def test_tokenizer_learned_merges(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = "the quick brown fox"
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) < len(text.encode())


def test_chat_template_renders(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == f"{BOS_TOKEN}system: Be brief.\nuser: Hello?\nassistant: "
    assert tokenizer.eos_token == EOS_TOKEN


def test_writing_is_deterministic_across_interpreters(model_dir: Path, tmp_path: Path) -> None:
    # Another interpreter has another hash seed and thread timing: it must train the same merges.
    subprocess.run(
        [sys.executable, "-m", "app.tiny_llm", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_writing_again_changes_only_what_differs(tmp_path: Path) -> None:
    assert set(write_tiny_llm(tmp_path)) == FILES
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert write_tiny_llm(tmp_path) == []
    (tmp_path / "config.json").write_text("{}")
    assert write_tiny_llm(tmp_path) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == tiny_llm_files()["config.json"]
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert {n for n in FILES if after[n] != before[n]} == {"config.json"}
    assert set(after) == FILES  # no temporary file left beside them
