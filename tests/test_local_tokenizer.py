"""The local tokenizer (`models.tokenizer`): transformers' ids and text, without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmperf.models.names import trained_model_path
from pytest_llmperf.models.tokenizer import FileTokenizer, HFTokenizer, local_tokenizer

TEXTS = [
    "Hello world, this is a test .",
    "3 + 4 =",
    " leading space and  two spaces",
    "accents é ü and 你好",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_file_tokenizer_gives_transformers_ids_and_text(text: str) -> None:
    from transformers import AutoTokenizer

    path = trained_model_path()
    ours = local_tokenizer(str(path))
    theirs = HFTokenizer(AutoTokenizer.from_pretrained(path))
    assert isinstance(ours, FileTokenizer)
    assert ours.encode(text) == theirs.encode(text)
    assert ours.encode_with_specials(text) == theirs.encode_with_specials(text)
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
    assert ours.eos_token_id == theirs.eos_token_id is not None


@pytest.mark.parametrize(
    ("keys", "cleaned"),
    [
        ('"clean_up_tokenization_spaces": true', False),  # transformers ignores it for BPE
        (
            '"clean_up_tokenization_spaces": true, '
            '"clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output": true',
            True,
        ),
    ],
    ids=["asked", "forced"],
)
def test_the_file_tokenizer_cleans_up_spaces_where_transformers_does(
    tmp_path: Path, keys: str, cleaned: bool
) -> None:
    from transformers import AutoTokenizer

    copy = tmp_path / "model"
    shutil.copytree(trained_model_path(), copy)
    config = (copy / "tokenizer_config.json").read_text()
    (copy / "tokenizer_config.json").write_text(config.replace("{", "{" + keys + ",", 1))
    text = "Yes , it is . Is it ? It 's done !"
    ours, theirs = local_tokenizer(str(copy)), HFTokenizer(AutoTokenizer.from_pretrained(copy))
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
    assert (ours.decode(ours.encode(text)) != text) == cleaned


def test_loading_and_using_it_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from pytest_llmperf.models.tokenizer import local_tokenizer\n"
        "t = local_tokenizer('tiny-trained')\n"
        "assert t.decode(t.encode('3 + 4 =')) == '3 + 4 ='\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
