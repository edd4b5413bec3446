"""The built-in tiny model: built offline, deterministic, cached, loadable."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.models.cache import default_cache_dir
from pytest_llmperf.models.names import TINY_MODEL_NAME, resolve_model, tiny_model_path
from pytest_llmperf.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def fresh_tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny model built from scratch into an empty cache named by LLMPERF_CACHE_DIR.

    The variable is set only while building: other tests share the default cache.
    """
    cache = tmp_path_factory.mktemp("llmperf-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMPERF_CACHE_DIR", str(cache))
        path = tiny_model_path()
    yield path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_goes_to_the_cache_dir_and_is_byte_identical(
    fresh_tiny: Path, tmp_path: Path
) -> None:
    assert fresh_tiny.parent.parent.name.startswith("llmperf-cache")
    assert fresh_tiny == fresh_tiny.parent / "tiny-v1"
    again = tmp_path / "again"
    build_tiny_model(again)
    assert _sha256(again / "model.safetensors") == _sha256(fresh_tiny / "model.safetensors")
    assert (again / "tokenizer.json").read_text() == (fresh_tiny / "tokenizer.json").read_text()
    names = sorted(p.name for p in fresh_tiny.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (again / name).read_bytes() == (fresh_tiny / name).read_bytes(), name
    # No temporary build directories are left behind.
    assert sorted(p.name for p in fresh_tiny.parent.iterdir()) == ["tiny-v1", "tiny-v1.lock"]


def test_loads_with_auto_classes() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    config = model.config
    assert config.model_type == "llama"
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.hidden_size // config.num_attention_heads == 64
    assert model.model.layers[0].self_attn.head_dim == 64
    assert (config.num_hidden_layers, config.num_key_value_heads) == (2, 2)
    assert config.tie_word_embeddings is False
    assert config.vocab_size == len(tokenizer) == 1024
    assert str(next(model.parameters()).dtype) == "torch.float32"
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokenizer.convert_ids_to_tokens(
        [config.bos_token_id, config.eos_token_id, config.pad_token_id]
    ) == ["<s>", "</s>", "<pad>"]
    assert tokenizer.padding_side == "left"

    ids = tokenizer.encode("The quick brown fox, 42 times!")
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert tokenizer.decode(ids) == "The quick brown fox, 42 times!"
    assert tokenizer.decode(tokenizer.encode("naïve café ☕")) == "naïve café ☕"  # byte-level

    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<s><|user|>\nhi</s>\n<|assistant|>\n"


def test_concurrent_builders_share_one_build(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(tiny_model_path(tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [tmp_path / "models" / "tiny-v1"] * 3
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-v1", "tiny-v1.lock"]
    assert (results[0] / "model.safetensors").stat().st_size > 0


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLMPERF_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pytest-llmperf"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-llmperf"
    monkeypatch.setenv("LLMPERF_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_resolve_model(tmp_path: Path) -> None:
    assert resolve_model(TINY_MODEL_NAME) == tiny_model_path()
    local = tmp_path / "my-model"
    local.mkdir()
    with pytest.raises(LLMPerfUsageError, match=r"has no config\.json"):
        resolve_model(str(local))
    (local / "config.json").write_text("{}")
    assert resolve_model(str(local)) == local.resolve()


def test_resolve_model_refuses_hub_names() -> None:
    with pytest.raises(LLMPerfUsageError) as info:
        resolve_model("nonexistent/dir")
    assert str(info.value) == (
        "--model: model path 'nonexistent/dir' does not exist (give a local directory "
        "with config.json, or 'tiny' / 'tiny-trained' for the built-in models)"
    )


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, pytest_llmperf.models.tiny; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", ["pytest_llmperf.tinymodel", "pytest_llmperf.models"])
def test_the_module_prints_a_built_in_models_path(module: str) -> None:
    """Both public commands (the README's `python -m pytest_llmperf.tinymodel` and the
    package's own) print the built model's directory; a wrong name is a usage error."""
    from pytest_llmperf.models.names import tiny_model_path

    run = subprocess.run(
        [sys.executable, "-m", module, "tiny"], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == str(tiny_model_path())
    wrong = subprocess.run(
        [sys.executable, "-m", module, "tiny-big"], capture_output=True, text=True
    )
    assert wrong.returncode == 2
    assert "usage: python -m pytest_llmperf.models [tiny|tiny-trained]" in wrong.stderr
