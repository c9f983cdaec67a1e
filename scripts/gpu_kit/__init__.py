"""The GPU kit: vLLM's GPU build and what the lent GPU image lacks, packed on a CPU
machine, installed and run on the GPU machine (docs/gpu-build.md)."""
