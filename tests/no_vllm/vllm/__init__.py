# Put first on PYTHONPATH, this package makes vLLM look uninstalled to child Pythons, as on a
# host without the engine. Tests not marked `engine` run with it (see conftest.py).
raise ModuleNotFoundError("No module named 'vllm' (hidden from this test)", name="vllm")
