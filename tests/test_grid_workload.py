"""Grids (ids in the seeds' style, YAML with line numbers) and workloads on the real tokenizer."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from pytest_llmperf.errors import ArgumentError
from pytest_llmperf.models.names import tiny_model_path
from pytest_llmperf.suite.grid import Config, Grid, GridError, config_name
from pytest_llmperf.suite.workload import (
    DatasetError,
    DatasetWorkload,
    LengthDistribution,
    SyntheticWorkload,
    check_responses,
    load_dataset,
)


def test_ids_in_the_seeds_style() -> None:
    assert (
        config_name({"tensor_parallel_size": 1, "max_model_len": 1024, "max_num_seqs": 24})
        == "tp1_len1024_batch24"
    )
    grid = Grid.product({"tensor_parallel_size": [1, 2], "max_num_seqs": [4, 8]})
    assert [c.name for c in grid] == ["tp1_batch4", "tp1_batch8", "tp2_batch4", "tp2_batch8"]
    params = grid.params()
    assert [m.name for m in params[2].marks] == ["gpu"] and params[2].marks[0].args == (2,)
    assert list(params[0].marks) == []


def test_a_grid_can_compare_the_hf_decode_paths() -> None:
    grid = Grid.product({"max_num_seqs": [1], "triton_kernels": [True, False], "compile": [False]})
    assert [c.name for c in grid] == [
        "batch1_tritontrue_compilefalse",
        "batch1_tritonfalse_compilefalse",
    ]
    assert dict(list(grid)[1].engine_settings) == {
        "max_num_seqs": 1,
        "triton_kernels": False,
        "compile": False,
    }


@pytest.mark.parametrize("engine", ["hf", "hf-fast"])
def test_every_hf_setting_but_the_device_can_be_given_in_a_grid(engine: str) -> None:
    """(`device` follows --gpus.) A setting the engine takes but grids refuse could only be
    set from Python; the engine reads its settings through the same spec."""
    from pytest_llmperf.engines import engine_spec
    from pytest_llmperf.suite.config import fit

    values = {str: "sdpa", int: 2, bool: False, Mapping: {}}
    spec = engine_spec(engine)
    settings = {
        s.name: s.choices[1] if s.choices else values[s.types[0]]
        for s in spec.settings
        if s.name != "device"
    }
    settings["tensor_parallel_size"] = 1
    settings["python"] = sys.executable  # an interpreter that is there (it is checked)
    fitted = fit(Config.make("all", settings), engine)
    assert fitted.settings == settings and fitted.not_applied == ()
    with pytest.raises(GridError, match=f"unknown setting 'device' for engine '{engine}'"):
        Config.make("device", {"device": "cpu"}, engine=engine)


@pytest.mark.parametrize(
    ("vllm_args", "tp", "gpus"),
    [
        ({}, 2, 2),
        ({"pipeline_parallel_size": 2}, 2, 4),  # both stages on this host (mp)
        ({"pipeline_parallel_size": 2, "nnodes": 2}, 4, 4),  # vLLM's launcher: half here
        ({"distributed_executor_backend": "ray", "pipeline_parallel_size": 2}, 4, 4),
        ({"data_parallel_size": 4, "data_parallel_size_local": 2}, 1, 2),
    ],
)
def test_a_configuration_leases_the_gpus_vllm_uses_on_this_host(
    vllm_args: dict[str, object], tp: int, gpus: int
) -> None:
    config = Config.make("c", {"tensor_parallel_size": tp, "vllm_args": vllm_args})
    assert config.gpus_on_host == gpus
    (param,) = Grid.of([config]).params()
    assert [m.args for m in param.marks if m.name == "gpu"] == [(gpus,)]


def test_yaml_named_configs_keep_their_names(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "schema: 1\nconfigs:\n  tp1_len2048_batch4_long:\n    tensor_parallel_size: 1\n"
        "    max_model_len: 2048\n    max_num_seqs: 4\n    max_new_tokens: 1024\n"
        "    marks: [longform]\n"
    )
    (config,) = Grid.from_yaml(path)
    assert config.name == "tp1_len2048_batch4_long"
    assert dict(config.engine_settings) == {
        "tensor_parallel_size": 1,
        "max_model_len": 2048,
        "max_num_seqs": 4,
    }
    assert dict(config.workload_settings) == {"max_new_tokens": 1024}
    assert config.marks == ("longform",)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "schema: 1\nconfigs:\n  a:\n    max_num_seqs: many\n",
            "line 4: setting 'max_num_seqs' must be int, got 'many'",
        ),
        (
            "schema: 1\nconfigs:\n  a:\n    max_num_seqs: 0\n",
            "line 4: setting 'max_num_seqs' must be at least 1",
        ),
        ("schema: 1\nconfigs: [1, 2\n", "line 3: invalid YAML"),
        (
            "schema: 1\nproduct:\n  axes:\n    max_num_seqs: 4\n",
            "line 4: axis 'max_num_seqs' must be a non-empty list",
        ),
        ("schema: 2\nconfigs: {}\n", "line 1: unsupported schema"),
        ("schema: 1\nconfig: {}\n", "line 2: unknown key 'config'"),
    ],
)
def test_yaml_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(GridError, match=str(path)) as info:
        Grid.from_yaml(path)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "schema: 1\nconfigs:\n  a:\n    max_num_seqs: 1\n  a:\n    max_num_seqs: 2\n",
            "line 5: duplicate key 'a'",
        ),
        (
            "schema: 1\nconfigs:\n  a:\n    max_num_seqs: 1\n    max_new_tokens: 8\n    max_num_seqs: 2\n",
            "line 6: duplicate key 'max_num_seqs'",
        ),
        (
            "schema: 1\nproduct:\n  axes: {max_num_seqs: [1], max_num_seqs: [2]}\n",
            "line 3: duplicate key 'max_num_seqs'",
        ),
    ],
)
def test_yaml_duplicate_keys_are_refused(tmp_path: Path, text: str, message: str) -> None:
    # PyYAML would silently keep the last one.
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(GridError) as info:
        Grid.from_yaml(path)
    assert str(info.value) == f"{path}: {message}"


def test_an_axis_may_be_any_iterable_of_values_but_not_text() -> None:
    grid = Grid.product({"max_num_seqs": range(1, 3)}, {"max_model_len": 64})
    assert [c.name for c in grid] == ["batch1", "batch2"]
    with pytest.raises(
        ArgumentError, match=r"axes\['max_num_seqs'\]='12': must be a list of values"
    ):
        Grid.product({"max_num_seqs": "12"})


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(GridError, match="duplicate configuration name"):
        Grid.of([Config(name="a"), Config(name="a")])


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path())


@pytest.mark.parametrize("n_tokens", [1, 7, 64, 300])
def test_synthetic_prompts_have_exact_token_lengths(tokenizer, n_tokens: int) -> None:  # type: ignore[no-untyped-def]
    requests = SyntheticWorkload(num_requests=5, input_tokens=n_tokens, output_tokens=3).build(
        tokenizer
    )
    assert [len(tokenizer.encode(r.prompt, add_special_tokens=False)) for r in requests] == [
        n_tokens
    ] * 5
    assert all(r.sampling.min_tokens == r.sampling.max_tokens == 3 for r in requests)
    assert n_tokens < 7 or len({r.prompt for r in requests}) == 5


def test_output_length_distribution_is_seeded(tokenizer) -> None:  # type: ignore[no-untyped-def]
    work = SyntheticWorkload(
        num_requests=20, input_tokens=4, output_tokens=LengthDistribution("uniform", 4, 12), seed=3
    )
    first = [r.sampling.max_tokens for r in work.build(tokenizer)]
    assert first == [r.sampling.max_tokens for r in work.build(tokenizer)]
    assert min(first) >= 4 and max(first) <= 12 and len(set(first)) > 3


def test_grid_settings_override_the_workload() -> None:
    work = SyntheticWorkload(output_tokens=8).with_overrides(
        {"max_new_tokens": 99, "num_requests": 2}
    )
    assert work.output_tokens == 99 and work.num_requests == 2


def test_dataset_round_trip_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"custom_id": "a", "prompt": "hi", "max_tokens": 4, "reference": "x"}\n\n'
        '{"custom_id": "b", "messages": [{"role": "user", "content": "yo"}]}\n'
    )
    items = load_dataset(path)
    assert [(i.custom_id, i.line) for i in items] == [("a", 1), ("b", 3)]
    requests = DatasetWorkload(path, default_max_tokens=7).build(tokenizer=None)  # type: ignore[arg-type]
    assert [r.sampling.max_tokens for r in requests] == [4, 7]
    assert len(load_dataset(path, limit=1)) == 1
    assert check_responses(requests, ["a"]) == ["no response for custom_id 'b'"]
    assert check_responses(requests, ["a", "b", "z"]) == ["response for unknown custom_id 'z'"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "x"}', "'custom_id' must be a non-empty string"),
        ('{"custom_id": "a"}', "give exactly one of 'prompt' or 'messages'"),
        (
            '{"custom_id": "a", "prompt": "x", "max_tokens": -1}',
            "'max_tokens' must be a positive integer",
        ),
        ('{"custom_id": "a", "prompt": "x", "colour": 1}', "unknown field(s) colour"),
        ('{"custom_id": "a", "messages": [{"role": "user"}]}', "'messages' must be a list"),
        ("[1, 2]", "each line must be a JSON object"),
        ('{"custom_id": "a", "prompt": "x"', "not valid JSON"),
    ],
)
def test_dataset_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"custom_id": "ok", "prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}: line 2: ")
    assert message in str(info.value)


def test_duplicate_custom_id(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"custom_id": "a", "prompt": "x"}\n{"custom_id": "a", "prompt": "y"}\n')
    with pytest.raises(DatasetError, match="line 2: duplicate custom_id 'a' \\(first on line 1\\)"):
        load_dataset(path)


def test_a_python_grid_for_several_engines_says_where_it_was_made() -> None:
    grid = Grid.of(
        [Config.make("eager", {"max_num_seqs": 2, "enforce_eager": True})], engines=["hf", "vllm"]
    )
    (config,) = grid
    assert config.engines == ("hf", "vllm")
    assert config.source("engines").startswith(f"{__file__}: line ")
    from pytest_llmperf.suite.config import fit

    fitted = fit(config, "hf")
    assert fitted.settings == {"max_num_seqs": 2} and fitted.not_applied == ("enforce_eager",)
    with pytest.raises(GridError, match="unknown setting 'n_batch' for engines hf, vllm"):
        Grid.of([Config.make("nb", {"n_batch": 4})], engines=["hf", "vllm"])
