"""Hand-written Triton kernels for the batch-1 decode step."""
