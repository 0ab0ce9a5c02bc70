"""Shared by the llama.cpp benchmark scripts: import before constructing `Llama`.

LLAMA_CPP_NO_EXTRA_BUFFERS=1 loads the weights without llama.cpp's extra buffer types (its AMX
and repacked layouts). llama-cpp-python 0.3.36 built on a Xeon with AMX crashed (segmentation
fault) in them on every quantized file here, so scripts/bench.sh retries a model that way and
marks its row.
"""
import os

import llama_cpp
import llama_cpp.llama

if os.environ.get("LLAMA_CPP_NO_EXTRA_BUFFERS") == "1":
    _default_params = llama_cpp.llama_model_default_params

    def _params_without_extra_buffers():
        params = _default_params()
        params.use_extra_bufts = False
        return params

    # `Llama()` reads the defaults through the low-level module it imported.
    llama_cpp.llama.llama_cpp.llama_model_default_params = _params_without_extra_buffers
