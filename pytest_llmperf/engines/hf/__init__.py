"""The transformers engines: `hf` (transformers' own generate, `engine`, `generate`) and
`hf-fast` (the reference decoder, `fast`: our decode loop, CUDA-graph path, fused Llama step,
`triton/` kernels), sharing loading, batching and scoring (`common`, `rows`, `scoring`)."""
