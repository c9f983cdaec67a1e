"""Test doubles shipped with autotune: a stand-in vLLM server and a scripted machine probe."""
