"""The `openai` client's settings and traits; the server engines take its client settings."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_llmperf.engines.spec import EngineSpec, FrozenArgs, Setting, Traits

ENDPOINT = Setting(
    "endpoint",
    (str,),
    "completions",
    "completions (/v1/completions), chat (/v1/chat/completions for all), or ollama "
    "(Ollama's native API, with its own timings)",
    prefix="",
    choices=("completions", "chat", "ollama"),
)
MAX_CONCURRENCY = Setting(
    "max_concurrency",
    (int,),
    doc="requests in flight (closed loop); default all of a round's at once",
    prefix="c",
    minimum=1,
)
REQUEST_TIMEOUT_S = Setting(
    "request_timeout_s",
    (float, int),
    600.0,
    "bound on one request's time, past which it is a recorded failure "
    "(--llmperf-request-timeout sets it for the run)",
    prefix="timeout",
    above=0,
)
PROMPTS_PER_REQUEST = Setting(
    "prompts_per_request",
    (int,),
    1,
    "prompts sent in one request (the `prompt` list form, as evaluation harnesses batch)",
    prefix="ppr",
    minimum=1,
)
TOKENIZED_REQUESTS = Setting(
    "tokenized_requests",
    (bool,),
    False,
    "send text prompts as the token ids the server would make of them (counted in the round)",
    prefix="tok",
)
API_KEY_ENV = Setting(
    "api_key_env",
    (str,),
    "OPENAI_API_KEY",
    "environment variable holding the API key (--api-key-env)",
    grid=False,
)
TOKENIZER = Setting(
    "tokenizer",
    (str,),
    doc="local tokenizer directory for prompts and fallback counts; default the served "
    "model's directory",
)
#: What the server engines (`vllm-server`, `llamacpp-server`) pass on to their client.
CLIENT_SETTINGS = (
    ENDPOINT,
    MAX_CONCURRENCY,
    REQUEST_TIMEOUT_S,
    PROMPTS_PER_REQUEST,
    TOKENIZED_REQUESTS,
    API_KEY_ENV,
)


def client_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """The settings among `settings` that go to the `openai` client."""
    names = {s.name for s in OPENAI.settings}
    return {k: v for k, v in settings.items() if k in names}


OPENAI = EngineSpec(
    name="openai",
    target="pytest_llmperf.engines.openai.engine:OpenAIEngine",
    doc="any OpenAI-compatible server, through our streaming HTTP client",
    settings=(
        Setting(
            "base_url",
            (str,),
            "http://127.0.0.1:8000",
            "the server (--base-url)",
            grid=False,
        ),
        *CLIENT_SETTINGS,
        TOKENIZER,
        Setting(
            "metrics_url",
            (str,),
            None,
            "the server's Prometheus endpoint, read during the measured rounds "
            "(--llmperf-metrics-url); none: no server metrics",
            grid=False,
        ),
        Setting(
            "vllm_extensions",
            (bool,),
            True,
            "send vLLM's min_tokens, ignore_eos and top_k",
            prefix="vllmx",
        ),
        Setting(
            "eos_logit_bias",
            (bool,),
            False,
            "fixed lengths through logit_bias -100 on EOS (a server without ignore_eos)",
            grid=False,
        ),
        Setting(
            "extra_body",
            (Mapping,),
            FrozenArgs(),
            "fields merged into every request body (a managed server's needs)",
            grid=False,
        ),
    ),
    traits=Traits(uses_gpus=False, scores=True, takes_arrivals=True),
)
