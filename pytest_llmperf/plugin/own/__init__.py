"""Your own code under the plugin: `llmperf.time`, `llmperf.time_turns` and `llmperf.record`
(`methods`, with the steps behind them in `timed`), the `llmperf_gpus` fixture's leases and
leak checks (`gpus`), and the hook that declares your own metrics (`hookspec`)."""
