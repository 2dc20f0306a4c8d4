"""What the model-file readers share: optional imports with their hints, the safetensors header."""

from __future__ import annotations

import json
import os
import struct

from ..errors import NetworkError

__all__ = ["INDEX_SUFFIX", "SAFETENSORS_HINT", "TORCH_HINT"]

INDEX_SUFFIX = ".safetensors.index.json"  # Hugging Face's sharded safetensors: an index and its shards
SAFETENSORS_HINT = 'pip install "balgraph[files]"'
TORCH_HINT = 'pip install "balgraph[torch]"'


def _need(module: str, hint: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise NetworkError(f"{what} needs the {module.split('.')[0]} package: {hint}") from None


def _safetensors_header(path) -> dict:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data offsets), checked."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise NetworkError(f"{os.fspath(path)}: not a valid safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > os.path.getsize(path):
            raise NetworkError(f"{os.fspath(path)}: not a valid safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NetworkError(f"{os.fspath(path)}: not a valid safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise NetworkError(f"{os.fspath(path)}: not a valid safetensors file (header is not a table)")
    return header
