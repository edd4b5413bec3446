"""vLLM: the offline `LLM` engine (`vllm`) and the managed OpenAI server (`vllm-server`)."""
