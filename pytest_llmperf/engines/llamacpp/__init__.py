"""llama.cpp: in process through llama-cpp-python (`llamacpp`), and its server
(`llamacpp-server`)."""
