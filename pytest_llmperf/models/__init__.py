"""Models: names and local resolution, the cache folder, the built-in tiny models, GGUF."""
