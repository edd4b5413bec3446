"""GGUF files for llama.cpp, written from a local Hugging Face Llama (the built-in models).

llama.cpp reads GGUF only. `gguf_model(model, quantization)` gives the GGUF file for
`--model` and a quantization type, building and caching it when needed:

- `--model` a `.gguf` file: used as it is (quantization `None`), or quantized from it.
- `--model tiny`, `tiny-trained` or a local Llama directory: written to GGUF here with the
  `gguf` package (F32 or F16 weights, norms kept in F32 as llama.cpp's converter does),
  then quantized to other types with llama.cpp's own `llama_model_quantize`.

Files live in `<cache>/gguf/` (see `tinymodel.default_cache_dir`), built once under a file
lock and renamed into place when complete, like the models.

What the writer does that a plain copy would not:
- Q and K projections are permuted from Hugging Face's rotary layout (two halves) to
  GGML's (interleaved pairs), as llama.cpp's `convert_hf_to_gguf.py` does.
- The tokenizer is stored as GGUF's "gpt2" (byte-level BPE) model with the "gpt-2"
  pre-tokenizer: the same regex split and merges as the tiny models' tokenizer, so both
  give the same ids (tested). No BOS is added, as the HF tokenizer adds none.

Quantization types are llama.cpp's names (`Q8_0`, `Q6_K`, `Q4_K_M`, ...). K-quants need rows
of 256 values; the tiny models' rows are 128 wide, so llama.cpp quantizes those tensors with
its fallback type (e.g. Q5_0 for Q4_K) and says so in its log: the file is real, the type
mix is llama.cpp's choice.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.models.llama_cpp_log import quiet_llama_cpp

#: Bump when the writer changes, so that cached files are rebuilt.
_WRITER_VERSION = 1
#: Types the writer produces itself; everything else goes through llama_model_quantize.
WRITTEN_TYPES = ("F32", "F16")
DEFAULT_QUANTIZATION = "F16"


def quantization_types() -> list[str]:
    """Every type llama.cpp can quantize to, by name (from the installed llama_cpp)."""
    import llama_cpp

    prefixes = ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_")
    names = [n.split("_FTYPE_", 1)[1] for n in dir(llama_cpp) if n.startswith(prefixes)]
    return sorted(n.removeprefix("MOSTLY_").removeprefix("ALL_") for n in names)


def gguf_model(model: str, quantization: str | None = None) -> Path:
    """The GGUF file for `--model` at `quantization` (see the module docstring)."""
    quant = quantization.upper() if quantization else None
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LLMPerfUsageError(f"--model: GGUF file {model!r} does not exist")
        if quant is None:
            return path.resolve()
        return _cached(_key(str(path.resolve()), path.stat().st_mtime_ns, quant), quant, path)
    from pytest_llmperf.models.names import resolve_model

    model_dir = resolve_model(model)
    quant = quant or DEFAULT_QUANTIZATION
    return _cached(_key(str(model_dir), _dir_stamp(model_dir), quant), quant, model_dir)


def write_gguf(model_dir: Path, out: Path, file_type: str = "F16") -> None:
    """Write the Llama in `model_dir` (config.json, safetensors, tokenizer.json) to `out`."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    if file_type not in WRITTEN_TYPES:
        raise ValueError(f"write_gguf writes {', '.join(WRITTEN_TYPES)}, not {file_type!r}")
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise LLMPerfUsageError(
            f"--model {model_dir}: only Llama models are written to GGUF here "
            f"(model_type {config.get('model_type')!r}); convert it with llama.cpp's "
            "convert_hf_to_gguf.py and pass the .gguf file"
        )
    weights: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(file))
    writer = gguf.GGUFWriter(str(out), "llama")
    _write_hparams(writer, config, file_type)
    _write_tokenizer(writer, model_dir, config)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads")
    half = np.float16 if file_type == "F16" else np.float32
    for hf_name, array in weights.items():
        name = _tensor_name(hf_name)
        if name is None:
            continue
        if hf_name.endswith("q_proj.weight"):
            array = _permute(array, heads, heads)
        elif hf_name.endswith("k_proj.weight"):
            array = _permute(array, heads, kv_heads or heads)
        # 1-D tensors (norms) stay F32: llama.cpp's converter keeps them so.
        writer.add_tensor(name, array.astype(half if array.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_gguf(source: Path, out: Path, quantization: str) -> None:
    """`llama_model_quantize(source -> out)` to the named type, with llama.cpp's defaults."""
    import llama_cpp

    quiet_llama_cpp()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantization}", None)
    if ftype is None:
        ftype = getattr(llama_cpp, f"LLAMA_FTYPE_ALL_{quantization}", None)
    if ftype is None:
        known = ", ".join(quantization_types())
        raise LLMPerfUsageError(
            f"quantization {quantization!r} is not llama.cpp's (known: {known})"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({source} -> {quantization}) returned {status}")


# --- cache ----------------------------------------------------------------------------


def _key(source: str, stamp: object, quant: str) -> str:
    digest = hashlib.sha256(f"{_WRITER_VERSION}|{source}|{stamp}".encode()).hexdigest()[:12]
    return f"{Path(source).stem or 'model'}-{digest}-{quant}.gguf"


def _dir_stamp(model_dir: Path) -> str:
    """Changes when the model's files change (names, sizes, modification times)."""
    parts = sorted(
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in model_dir.iterdir()
    )
    return ";".join(parts)


def _cached(name: str, quant: str, source: Path) -> Path:
    from pytest_llmperf.models.cache import default_cache_dir

    folder = default_cache_dir() / "gguf"
    dest = folder / name
    if dest.is_file():
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    build: Callable[[Path], None]
    if source.is_dir() and quant in WRITTEN_TYPES:
        build = lambda out: write_gguf(source, out, quant)  # noqa: E731
    elif source.is_dir():
        base = _cached(name.replace(f"-{quant}.gguf", "-F16.gguf"), "F16", source)
        build = lambda out: quantize_gguf(base, out, quant)  # noqa: E731
    else:
        build = lambda out: quantize_gguf(source, out, quant)  # noqa: E731
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not dest.is_file():
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
                os.close(fd)
                try:
                    build(Path(tmp))
                    os.chmod(tmp, 0o644)
                    os.rename(tmp, dest)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dest


# --- writer parts -------------------------------------------------------------------------


def _write_hparams(writer: Any, config: dict[str, Any], file_type: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(config.get("_name_or_path") or "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    file_types = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_types[file_type])


def _write_tokenizer(writer: Any, model_dir: Path, config: dict[str, Any]) -> None:
    import gguf

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    model = spec["model"]
    if model.get("type") != "BPE" or (spec.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        raise LLMPerfUsageError(
            f"--model {model_dir}: only byte-level BPE tokenizers are written to GGUF here; "
            "convert it with llama.cpp's convert_hf_to_gguf.py and pass the .gguf file"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    vocab.update(special)
    size = max(config["vocab_size"], max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = gguf.TokenType.CONTROL if text in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, setter in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("pad_token_id", writer.add_pad_token_id),
    ):
        if config.get(key) is not None:
            setter(config[key])
    if "<unk>" in special:
        writer.add_unk_token_id(special["<unk>"])
    writer.add_add_bos_token(False)
    template = model_dir / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text())


_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _tensor_name(hf_name: str) -> str | None:
    if hf_name in _TOP_TENSORS:
        return _TOP_TENSORS[hf_name]
    parts = hf_name.split(".", 3)  # model.layers.<n>.<rest>
    if len(parts) == 4 and parts[:2] == ["model", "layers"]:
        rest = _LAYER_TENSORS.get(parts[3])
        return f"blk.{parts[2]}.{rest}" if rest else None
    return None


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """HF's rotary layout to GGML's, as llama.cpp's converter (`LlamaModel.permute`)."""
    heads = n_head_kv if n_head != n_head_kv else n_head
    shape = weights.shape
    return (
        weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    )
