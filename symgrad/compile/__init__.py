"""Compile layer: write generated modules to the cache, import them, wrap the kernels."""

from .cache import cache_dir, cache_info, clear_cache, load_module, prune_cache, write_module
from .function import CompiledFunction, NonFiniteWarning, compile

__all__ = [
    "CompiledFunction", "NonFiniteWarning", "cache_dir", "cache_info", "clear_cache", "compile",
    "load_module", "prune_cache", "write_module",
]
