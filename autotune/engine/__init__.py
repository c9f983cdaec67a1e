"""The vLLM engine and its machine: argv, the server process, its logs, hardware and memory."""
