"""The tiny Llama the llm app serves on one machine: real model files, no weights.

Owns: the files of a Llama-shaped model small enough for vLLM's CPU engine on 2 cores
(`config.json`, `generation_config.json`, a byte-level BPE tokenizer trained here with `tokenizers`,
with BOS/EOS and a chat template), written deterministically into a directory the caller gives
(`write_tiny_llm`). vLLM loads them through its real loading path; the weights are random
(`load_format: dummy` in the app's args), so nothing big is written and the text is gibberish.
Does not own: how the app serves it (app/llm.py) nor where the directory lives (the caller).

Shape: hidden 128, 2 layers, 2 attention and 2 KV heads of 64 (vLLM's CPU attention refuses a
head size of 16), a vocabulary of ~300 tokens, 2048 positions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
VOCAB_SIZE = 300  # the 256 byte symbols, BOS, EOS and a few dozen merges
MAX_POSITIONS = 2048

# Plain role prefixes: the template needs no special tokens beyond BOS/EOS, and vLLM detects
# from `message['content']` that it takes string content.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)

# What the tokenizer learns its merges from: fixed, so every run trains the same tokenizer.
_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve runs the model behind HAProxy and streams tokens to the client.",
    "user: hello, how are you today?",
    "assistant: I am fine, thank you. How can I help you with your question?",
    "system: you are a helpful assistant that answers in short sentences.",
    "the of and to in is that for it with as on was be at by this have from",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000; punctuation: , . ! ? ; : ' \" ( ) [ ] { }",
)


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 50, trainer=trainer)
    # BOS in front of every encoded prompt, as Llama's tokenizers do (completions; a chat prompt
    # carries it from the template and vLLM encodes it without special tokens).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, tok.token_to_id(BOS_TOKEN))],
    )
    return tok.to_str(pretty=True)


def tiny_llm_files() -> dict[str, str]:
    """{file name: text} of the model directory; the same on every call."""
    tokenizer = _tokenizer_json()
    vocab = json.loads(tokenizer)["model"]["vocab"]
    bos, eos = vocab[BOS_TOKEN], vocab[EOS_TOKEN]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        # Exactly the tokenizer's size: random weights may emit any id, and each must decode.
        "vocab_size": len(vocab),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    generation_config = {"bos_token_id": bos, "eos_token_id": eos}
    dump = lambda obj: json.dumps(obj, indent=2, sort_keys=True) + "\n"  # noqa: E731
    return {
        "config.json": dump(config),
        "generation_config.json": dump(generation_config),
        "tokenizer.json": tokenizer + "\n",
        "tokenizer_config.json": dump(tokenizer_config),
    }


def write_tiny_llm(directory: Path) -> list[str]:
    """Writes the model files into `directory` (created if missing). Files already there with the
    same content are left alone; returns the names written (none when all were current)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in tiny_llm_files().items():
        path = directory / name
        if path.exists() and path.read_text() == text:
            continue
        # Write beside, then rename: a replica reading the directory never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from replicas run as another user
        os.replace(tmp, path)
        written.append(name)
    return written


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        print("usage: python -m app.tiny_llm DIRECTORY", file=sys.stderr)
        sys.exit(2)
    names = write_tiny_llm(Path(sys.argv[1]))
    print(f"{sys.argv[1]}: wrote {', '.join(names) or 'nothing (up to date)'}")
