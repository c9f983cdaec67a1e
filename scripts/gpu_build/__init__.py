"""`scripts/check_gpu_build.py`, module by module: the wheel, the options, the strings, the
argv and the modules it checks (main.py says what and how)."""
