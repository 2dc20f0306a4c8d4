"""Layer chains larger than memory: safetensors read chunk-wise into Dask arrays, written back shard by shard.

A ``.safetensors`` file, or Hugging Face's sharded layout (``model.safetensors.index.json``,
``{"metadata": {...}, "weight_map": {tensor: shard file}}``, next to its shard files), is read
without loading a tensor: each becomes a Dask array whose chunks are read on demand where they
are needed, through safetensors' lazy slices (``safe_open(...).get_slice``; bfloat16 straight
from the file's bytes). :func:`balgraph.solve` then balances the chain on the chunks
(:mod:`balgraph.costs.chunked`), and :func:`write_lazy` writes the balanced tensors under the
same names, shapes and dtypes: each output file's header is written first, then every chunk is
computed and written into its place in the file by whichever process holds it (one shard at a
time; a cluster needs a file system that its workers share). Nothing is gathered on the caller's
side; a value that the original dtype cannot hold is an error naming the tensor, and the files
written so far are removed.

Examples
--------
>>> import numpy as np, os, tempfile
>>> from balgraph.files.models import save_tensors
>>> d = tempfile.mkdtemp()
>>> save_tensors({"0.weight": np.ones((4, 3)), "1.weight": np.ones((2, 4))}, os.path.join(d, "m.safetensors"))
>>> from balgraph.files.models import read_layer_chain
>>> chain = read_layer_chain(os.path.join(d, "m.safetensors"), chunks=(2, 3))  # doctest: +SKIP
>>> type(chain.matrices[0]).__name__, chain.matrices[0].chunks  # doctest: +SKIP
('Array', ((2, 2), (3,)))
"""

from __future__ import annotations

import json
import os
import numpy as np

from ..errors import NetworkError
from ..lazy import DASK_HINT, compute
from ..progress import progress
from ._safetensors import INDEX_SUFFIX, SAFETENSORS_HINT, _need, _safetensors_header

__all__ = ["read_chunked", "write_lazy", "TensorSlices", "FileRegion"]

_CODES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
_NAMES = {name: code for code, name in _CODES.items()}
_BF16_MAX, _BF16_TINY = 3.3895313892515355e38, 9.183549615799121e-41


def _raw_dtype(code: str) -> np.dtype:
    return np.dtype("<u2") if code == "BF16" else np.dtype(_CODES[code]).newbyteorder("<")


class TensorSlices:
    """One tensor of a safetensors file as a float64 array that reads slices on demand (for
    ``da.from_array``), as the loading reader widens every tensor to float64.

    Holds the path, the tensor's name, shape and dtype code only: it pickles to the workers,
    which open the file (memory-mapped by safetensors) for each chunk they read. bfloat16 is
    read as its raw bits and widened exactly.
    """

    def __init__(self, path: str, name: str, shape: tuple, code: str, offset: int):
        self.path, self.name, self.shape, self.code, self.offset = path, name, tuple(shape), code, offset
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float64)

    def __getitem__(self, key):
        if self.code == "BF16":
            raw = np.memmap(self.path, dtype=np.dtype("<u2"), mode="r", offset=self.offset, shape=self.shape)
            return (np.asarray(raw[key]).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        st = _need("safetensors", SAFETENSORS_HINT, f"reading {self.path}")
        with st.safe_open(self.path, framework="numpy") as fh:
            return np.asarray(fh.get_slice(self.name)[key], dtype=np.float64)


class FileRegion:
    """Where one tensor lies in a safetensors file being written: ``region[key] = values`` writes a
    chunk into place (cast to the tensor's dtype; bfloat16 rounded to nearest even). Picklable."""

    def __init__(self, path: str, shape: tuple, code: str, offset: int):
        self.path, self.shape, self.code, self.offset = path, tuple(shape), code, offset

    def __setitem__(self, key, values) -> None:
        values = np.asarray(values)
        if self.code == "BF16":
            bits = values.astype(np.float32).view(np.uint32)
            values = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        out = np.memmap(self.path, dtype=_raw_dtype(self.code), mode="r+", offset=self.offset, shape=self.shape)
        with np.errstate(over="ignore"):  # the writer counts what the dtype cannot hold, and says so
            out[key] = values
        out.flush()
        del out


def _dask_array():
    try:
        import dask.array as da
    except ImportError:
        raise NetworkError(f"reading model files chunk-wise needs Dask: {DASK_HINT}") from None
    return da


def read_chunked(path: str | os.PathLike, chunks="auto", *, sharded: bool = False) -> tuple:
    """The tensors of a ``.safetensors`` file (or, ``sharded``, of an index's shards) as Dask arrays.

    Returns ``(arrays, dtypes, metadata, shards)``: arrays by name in file order, each a Dask
    array of ``chunks`` (Dask's ``chunks=``: ``"auto"``, a byte size such as ``"256MiB"``, or a
    shape; vectors are one chunk) that reads its chunks where they are needed; the original dtype
    names; the ``__metadata__`` of the (first) file; the shard file of each tensor (None for one
    file). :func:`~balgraph.files.models.read_layer_chain` makes a chain of them.
    """
    da = _dask_array()
    p = os.fspath(path)
    if sharded:
        try:
            with open(p, encoding="utf-8") as fh:
                index = json.load(fh)
            weight_map = dict(index["weight_map"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise NetworkError(f"{p}: not a safetensors index (a JSON table with a 'weight_map'): {exc}") from None
        files = list(dict.fromkeys(weight_map.values()))
    else:
        weight_map, files = None, [os.path.basename(p)]
    base = os.path.dirname(p)
    arrays, dtypes, metadata = {}, {}, None
    for file in files:
        shard = os.path.join(base, file)
        if not os.path.isfile(shard):
            raise NetworkError(f"{p}: shard {file} is missing (looked in {base or '.'})")
        header = _safetensors_header(shard)
        meta = header.pop("__metadata__", None)
        metadata = meta if metadata is None else metadata
        start = 8 + _header_length(shard)
        stamp = os.stat(shard)
        for name, info in header.items():
            if weight_map is not None and weight_map.get(name) != file:
                continue
            code = str(info.get("dtype"))
            shape = tuple(int(n) for n in info.get("shape", ()))
            dtypes[name] = _CODES.get(code, code.lower())
            if code not in _CODES:
                arrays[name] = _Shape(shape)  # not read: the chain check names it as foreign
                continue
            src = TensorSlices(shard, name, shape, code, start + int(info["data_offsets"][0]))
            token = f"{os.path.abspath(shard)}:{stamp.st_mtime_ns}:{stamp.st_size}:{name}"
            arrays[name] = da.from_array(src, chunks=chunks if len(shape) == 2 else -1, lock=False, fancy=False,
                                         inline_array=True,
                                         name=f"safetensors-{_digest(token)}",
                                         meta=np.empty((0,) * len(shape), dtype=src.dtype))
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(arrays))
        if missing:
            raise NetworkError(f"{p}: tensors {missing[:5]} of the weight_map are not in their shards")
        arrays = {name: arrays[name] for name in weight_map if name in arrays} | arrays
    return arrays, dtypes, metadata, weight_map


class _Shape:
    """A tensor balgraph does not read (a dtype outside the chain's): its shape, for the messages."""

    def __init__(self, shape):
        self.shape, self.ndim = tuple(shape), len(shape)


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _header_length(path: str) -> int:
    with open(path, "rb") as fh:
        return int.from_bytes(fh.read(8), "little")


def _cast_limits(dtype: str) -> tuple[float, float]:
    if dtype == "bfloat16":
        return _BF16_MAX, _BF16_TINY
    info = np.finfo(np.dtype(dtype))
    return float(info.max), float(info.smallest_subnormal)


def _shard_files(chain, path: str, names: list) -> dict:
    """Output file of every tensor: one ``.safetensors``, or shards named after the output index."""
    if not path.lower().endswith(INDEX_SUFFIX):
        return {name: os.path.basename(path) for name in names}
    stem = os.path.basename(path)[: -len(INDEX_SUFFIX)]
    source = chain.shards or {name: "" for name in names}
    order = list(dict.fromkeys(source[name] for name in names))
    n = len(order)
    return {name: f"{stem}-{order.index(source[name]) + 1:05d}-of-{n:05d}.safetensors" for name in names}


def write_lazy(chain, path: str | os.PathLike, matrices, biases, *,
               show_progress: bool | None = None) -> None:
    """Write new weights of ``chain`` (a :class:`~balgraph.files.models.LayerChain`) to ``path``
    chunk by chunk, shard by shard (see the module docstring).

    ``path`` is a ``.safetensors`` file (every tensor in it) or a ``.safetensors.index.json``
    (the input's shards, renamed after the index: ``model.safetensors.index.json`` →
    ``model-00001-of-00002.safetensors``, ...). The matrices may be Dask or NumPy arrays.
    """
    da = _dask_array()
    p = os.fspath(path)
    tensors = chain.tensors(matrices, biases, gather=False)
    names = list(tensors)
    files = _shard_files(chain, p, names)
    base = os.path.dirname(p)
    inputs = {os.path.abspath(os.path.join(os.path.dirname(chain.path), f)) for f in (chain.shards or {}).values()}
    if chain.path:  # the file the chain was read from (none for a chain made to be written)
        inputs.add(os.path.abspath(chain.path))
    written: list[str] = []
    by_file: dict = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    total = 0
    try:
        with progress(len(by_file), desc=f"writing {os.path.basename(p)}", unit="shards", enabled=show_progress) as bar:
            for file, members in by_file.items():
                target = os.path.join(base, file)
                if os.path.abspath(target) in inputs:
                    raise NetworkError(f"{target}: writing would overwrite the file being read; choose another output name")
                regions, size = _allocate(target, members, tensors, chain)
                written.append(target)
                total += size
                sources, targets, checks = [], [], []
                for name in members:
                    value = tensors[name]
                    value = value if hasattr(value, "dask") else da.from_array(np.asarray(value), chunks=-1)
                    high, tiny = _cast_limits(chain.dtypes[name])
                    mag = da.absolute(value)
                    checks.append(((mag > high).sum(), ((mag > 0) & (mag < tiny / 2)).sum()))
                    sources.append(value)
                    targets.append(regions[name])
                stored = da.store(sources, targets, lock=False, compute=False)
                _, counts = compute(stored, checks)
                for name, (over, under) in zip(members, counts):
                    if over or under:
                        raise NetworkError(
                            f"the balanced {name} does not fit in {chain.dtypes[name]}: {int(over)} value(s) overflow"
                            f" and {int(under)} nonzero value(s) would round to 0; convert the model to float32 or"
                            " float64 first")
                bar.update(1)
        if p.lower().endswith(INDEX_SUFFIX):
            with open(p, "w", encoding="utf-8") as fh:
                json.dump({"metadata": {"total_size": total}, "weight_map": files}, fh, indent=2)
            written.append(p)
    except BaseException:
        for f in written:
            if os.path.exists(f):
                os.remove(f)
        raise


def _allocate(target: str, members: list, tensors: dict, chain) -> tuple[dict, int]:
    """Write the header of a safetensors file for ``members`` and size the file; their regions."""
    header: dict = {}
    if chain.metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in chain.metadata.items()}
    offset = 0
    for name in members:
        code = _NAMES[chain.dtypes[name]]
        shape = [int(n) for n in tensors[name].shape]
        nbytes = int(np.prod(shape, dtype=np.int64)) * _raw_dtype(code).itemsize
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    start = 8 + len(text)
    with open(target, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.truncate(start + offset)
    regions = {name: FileRegion(target, header[name]["shape"], header[name]["dtype"],
                                start + header[name]["data_offsets"][0]) for name in members}
    return regions, offset
