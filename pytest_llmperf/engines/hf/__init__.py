"""The transformers engine (`hf`): engine, decode loop, scoring and the CUDA decode fast path."""
