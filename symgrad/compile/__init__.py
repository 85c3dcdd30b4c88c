"""Compile layer: the pipeline artifact (graph, program, generated module), the cache it
writes to and imports from, and the checked wrappers of the kernels."""

from .cache import cache_dir, cache_info, clear_cache, load_module, prune_cache, write_module
from .function import CompiledFunction, NonFiniteWarning, compile
from .pipeline import Pipeline

__all__ = [
    "CompiledFunction", "NonFiniteWarning", "cache_dir", "cache_info", "clear_cache", "compile",
    "Pipeline", "load_module", "prune_cache", "write_module",
]
