"""Model files of layer chains: PyTorch state dicts (``.pt``, ``.pth``) and safetensors.

A *layer chain* is an MLP ``x_k = f(W_k x_{k-1} + b_k)`` saved as ``<module>.weight`` (2-D,
``(n_out, n_in)``, PyTorch's ``Linear`` layout) and optional ``<module>.bias`` (1-D) tensors, for
any module path (``0.weight``, ``2.weight``; ``net.fc1.weight``, ``net.fc2.weight``). The layers
are ordered by module path: in the file's order for a state dict (``model.state_dict()`` keeps
the order in which modules were registered), in natural order (``2`` before ``10``) for
safetensors (which stores tensors sorted by dtype and name); when that order does not chain
(``W_k`` has as many columns as ``W_{k-1}`` has rows) the other one, or the unique order by
shapes, is tried, and the error lists the shapes when none fits. ``order=`` names the modules
explicitly.

Balancing rescales hidden units, so tensors outside the chain (normalization statistics,
embeddings, convolutions, optimizer state) would be left stale: files holding them are refused,
naming them. Weights are balanced in float64 and written back with the same names, shapes and
dtypes; a value that the original dtype cannot hold (float16 overflow, or a nonzero weight
that would round to zero) is an error naming the tensor.

``.pt`` files are read with ``torch.load(..., weights_only=True)``: nothing but tensors and
containers is unpickled.

Examples
--------
>>> import numpy as np, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "mlp.safetensors")
>>> rng = np.random.default_rng(0)
>>> tensors = {"0.weight": rng.normal(size=(4, 3)).astype(np.float32), "0.bias": np.zeros(4, np.float32),
...            "2.weight": rng.normal(size=(2, 4)).astype(np.float32)}
>>> save_tensors(tensors, path)  # doctest: +SKIP
>>> chain = read_layer_chain(path)  # doctest: +SKIP
>>> chain.modules, [w.shape for w in chain.matrices], chain.problem().n_vars  # doctest: +SKIP
(['0', '2'], [(4, 3), (2, 4)], 4)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import NetworkError
from ..lazy import is_lazy
from ..model import Problem
from ..progress import progress
from ._safetensors import INDEX_SUFFIX, SAFETENSORS_HINT, TORCH_HINT, _need, _safetensors_header
from .sharded import read_chunked, write_lazy

__all__ = ["LayerChain", "read_layer_chain", "assemble_chain", "load_tensors", "save_tensors", "MODEL_SUFFIXES",
           "INDEX_SUFFIX", "SAFETENSORS_HINT", "TORCH_HINT"]

MODEL_SUFFIXES = {".pt": "torch", ".pth": "torch", ".safetensors": "safetensors"}


def _natural_key(module: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in module.split(".")]


def load_tensors(path: str | os.PathLike, format: str) -> tuple[dict, dict, dict | None]:
    """``(arrays, dtypes, metadata)``: float64 (or integer) numpy arrays by name, in file order.

    ``dtypes`` holds each tensor's original dtype name (``"float32"``, ``"bfloat16"``, ...).
    """
    p = os.fspath(path)
    if format == "safetensors":
        header = _safetensors_header(path)
        metadata = header.pop("__metadata__", None)
        if any(v.get("dtype") == "BF16" for v in header.values() if isinstance(v, dict)):
            _need("torch", TORCH_HINT, f"{p}: bfloat16 tensors")
            st = _need("safetensors.torch", SAFETENSORS_HINT, f"reading {p}")
            raw = {k: _from_torch(v) for k, v in _safe_call(st.load_file, p).items()}
        else:
            st = _need("safetensors.numpy", SAFETENSORS_HINT, f"reading {p}")
            raw = {k: (v, v.dtype.name) for k, v in _safe_call(st.load_file, p).items()}
        raw = {k: raw[k] for k in header if k in raw} | raw  # the file's order where it has one
    else:
        torch = _need("torch", TORCH_HINT, f"reading {p}")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for bad files
            msg = " ".join(str(exc).split())[:300]
            raise NetworkError(
                f"{p}: torch.load(weights_only=True) cannot read it ({type(exc).__name__}: {msg});"
                " save the model's state dict (torch.save(model.state_dict(), path))"
            ) from None
        metadata = None
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            kinds = sorted({type(v).__name__ for v in obj.values()}) if isinstance(obj, Mapping) else []
            raise NetworkError(
                f"{p}: holds a {type(obj).__name__}"
                + (f" of {', '.join(kinds)}" if kinds else "")
                + ", not a state dict of tensors: save model.state_dict() alone (no optimizer or"
                " training state)"
            )
        raw = {str(k): _from_torch(v) for k, v in obj.items()}
    arrays = {k: a for k, (a, _) in raw.items()}
    dtypes = {k: d for k, (_, d) in raw.items()}
    return arrays, dtypes, metadata


def _safe_call(fn, path):
    try:
        return fn(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise NetworkError(f"{path}: not a valid safetensors file ({type(exc).__name__}: {exc})") from None


def _from_torch(t) -> tuple[np.ndarray, str]:
    import torch

    name = str(t.dtype).removeprefix("torch.")
    if t.layout != torch.strided or t.is_quantized or t.is_meta:
        kind = "quantized" if t.is_quantized else "meta" if t.is_meta else str(t.layout).removeprefix("torch.")
        return np.zeros(0), f"{kind} {name}"
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.to(torch.float64).numpy(), name
    return t.numpy(), name


def save_tensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike, format: str | None = None,
                 dtypes: Mapping[str, str] | None = None, metadata: dict | None = None) -> None:
    """Write float64 arrays as a state dict or safetensors file, cast to ``dtypes`` (by name)."""
    p = os.fspath(path)
    format = format or MODEL_SUFFIXES.get(os.path.splitext(p)[1].lower())
    dtypes = dict(dtypes or {})
    wanted = {k: dtypes.get(k, np.asarray(v).dtype.name) for k, v in tensors.items()}
    if format == "torch" or "bfloat16" in wanted.values():
        torch = _need("torch", TORCH_HINT, f"writing {p}")
        out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(getattr(torch, wanted[k]))
               for k, v in tensors.items()}
        if format == "torch":
            torch.save(out, p)
            return
        st = _need("safetensors.torch", SAFETENSORS_HINT, f"writing {p}")
        st.save_file(out, p, metadata=metadata)
        return
    st = _need("safetensors.numpy", SAFETENSORS_HINT, f"writing {p}")
    st.save_file({k: np.ascontiguousarray(np.asarray(v).astype(wanted[k])) for k, v in tensors.items()},
                 p, metadata=metadata)


# ------------------------------------------------------------------ chains
@dataclass
class LayerChain:
    """The Linear layers of a model file, in chain order, as float64 matrices.

    Attributes
    ----------
    path, format : str
        Where it was read from; ``"torch"`` or ``"safetensors"``.
    modules : list of str
        Module paths in chain order (``""`` for a bare ``weight``/``bias`` pair).
    weight_names, bias_names : list
        Tensor names of each layer (``None`` for a layer without bias).
    matrices, biases : list of ndarray
        Float64 ``W_k`` of shape ``(n_out, n_in)`` and ``b_k`` (or ``None``).
    dtypes : dict
        Original dtype name of every tensor.
    names : list of str
        Every tensor name, in the file's order (what :meth:`write` writes).
    metadata : dict or None
        safetensors ``__metadata__``, written back.
    shards : dict or None
        For a sharded file (``format="safetensors-index"``), the shard file of every tensor;
        its matrices are then Dask arrays read chunk-wise (:mod:`balgraph.files.sharded`).
    """

    path: str
    format: str
    modules: list
    weight_names: list
    bias_names: list
    matrices: list
    biases: list
    dtypes: dict
    names: list
    metadata: dict | None = None
    shards: dict | None = None

    @property
    def lazy(self) -> bool:
        """Whether the tensors are Dask arrays read chunk-wise from the file (never gathered)."""
        return any(is_lazy(w) for w in self.matrices)

    def problem(self, activation: str | Sequence[str] = "relu") -> Problem:
        """The chain as a :class:`Problem` (``Problem.from_layers``); ``activation`` of hidden layers."""
        return Problem.from_layers(self.matrices, self.biases, activations=activation)

    def tensors(self, matrices: Sequence[np.ndarray], biases: Sequence[np.ndarray | None], *,
                gather: bool = True) -> dict:
        """New float64 tensors by name, in file order, checked against the original shapes
        (``gather=False``: Dask arrays stay lazy)."""
        def f64(a):
            return np.asarray(a, dtype=np.float64) if gather or not is_lazy(a) else a.astype(np.float64)

        out = {}
        for k, (w_name, b_name) in enumerate(zip(self.weight_names, self.bias_names)):
            w = f64(matrices[k])
            if tuple(w.shape) != tuple(self.matrices[k].shape):
                raise NetworkError(f"{w_name}: new shape {tuple(w.shape)} differs from the file's"
                                   f" {tuple(self.matrices[k].shape)}")
            out[w_name] = w
            if b_name is not None:
                if biases[k] is None:
                    raise NetworkError(f"{b_name}: the file has a bias for this layer; give one")
                out[b_name] = f64(biases[k]).reshape(self.biases[k].shape)
        return {name: out[name] for name in self.names}

    def write(self, path: str | os.PathLike, matrices: Sequence[np.ndarray],
              biases: Sequence[np.ndarray | None], format: str | None = None, *,
              show_progress: bool | None = None) -> None:
        """Write new weights under the same names, shapes and dtypes (format from the suffix).

        Dask matrices, or a sharded ``.safetensors.index.json`` output, are written chunk by
        chunk where the chunks live, shard by shard (:func:`balgraph.files.sharded.write_lazy`).
        """
        format = format or _suffix_format(path)
        if format in ("safetensors", "safetensors-index") and (
                format == "safetensors-index" or any(is_lazy(m) for m in [*matrices, *biases])):
            write_lazy(self, path, matrices, biases, show_progress=show_progress)
            return
        tensors = self.tensors(matrices, biases)
        for name, value in tensors.items():
            _check_cast(name, value, self.dtypes[name])
        with progress(len(tensors), desc=f"writing {os.path.basename(os.fspath(path))}", unit="tensors",
                      enabled=show_progress) as bar:
            save_tensors(tensors, path, format, self.dtypes,
                         self.metadata if (format or _suffix_format(path)) == "safetensors" else None)
            bar.update(len(tensors))


def _suffix_format(path) -> str | None:
    p = os.fspath(path).lower()
    if p.endswith(INDEX_SUFFIX):
        return "safetensors-index"
    return MODEL_SUFFIXES.get(os.path.splitext(p)[1])


def _check_cast(name: str, value: np.ndarray, dtype: str) -> None:
    if dtype == "bfloat16":
        info_max, info_tiny = 3.3895313892515355e38, 9.183549615799121e-41
    else:
        info = np.finfo(np.dtype(dtype))
        info_max, info_tiny = float(info.max), float(info.smallest_subnormal)
    mag = np.abs(value)
    over = int(np.count_nonzero(mag > info_max))
    under = int(np.count_nonzero((mag > 0) & (mag < info_tiny / 2)))
    if over or under:
        raise NetworkError(
            f"the balanced {name} does not fit in {dtype}: {over} value(s) overflow and {under}"
            f" nonzero value(s) would round to 0; convert the model to float32 or float64 first"
        )


def read_layer_chain(path: str | os.PathLike, format: str | None = None, *,
                     order: Sequence[str] | None = None, chunks=None,
                     show_progress: bool | None = None) -> LayerChain:
    """Read a layer chain from a ``.pt``/``.pth`` state dict or a ``.safetensors`` file.

    Parameters
    ----------
    path : path-like
    format : {"torch", "safetensors", "safetensors-index"}, optional
        Default: from the suffix (``.safetensors.index.json``: sharded safetensors).
    order : sequence of str, optional
        The module paths in chain order (default: see the module docstring).
    chunks : optional
        Read a ``.safetensors`` file chunk-wise into Dask arrays instead of loading it (Dask's
        ``chunks=``: ``"auto"``, a byte size like ``"256MiB"``, or a shape; see
        :mod:`balgraph.files.sharded`). Sharded files are always read so (``"auto"``).

    Raises
    ------
    NetworkError
        For tensors outside a chain of Linear layers, shapes that do not chain, an unreadable
        file; the message names the file and the tensors.
    """
    p = os.fspath(path)
    format = format or _suffix_format(p)
    if format not in ("torch", "safetensors", "safetensors-index"):
        raise NetworkError(f"{p}: a model file is .pt, .pth, .safetensors or {INDEX_SUFFIX}")
    if not os.path.isfile(p):
        raise NetworkError(f"{p}: no such file")
    if format == "safetensors-index" or chunks is not None:
        if format == "torch":
            raise NetworkError(f"{p}: chunk-wise reading (chunks=) takes .safetensors files, not state dicts")
        arrays, dtypes, metadata, shards = read_chunked(p, "auto" if chunks is None else chunks,
                                                        sharded=format == "safetensors-index")
        return assemble_chain(p, format, arrays, dtypes, metadata, order, shards)
    with progress(os.path.getsize(p), desc=f"reading {os.path.basename(p)}", unit="B",
                  enabled=show_progress) as bar:
        arrays, dtypes, metadata = load_tensors(p, format)
        bar.update(os.path.getsize(p))
    return assemble_chain(p, format, arrays, dtypes, metadata, order)


def assemble_chain(p: str, format: str, arrays: dict, dtypes: dict, metadata: dict | None,
                   order: Sequence[str] | None = None, shards: dict | None = None) -> LayerChain:
    """The :class:`LayerChain` of tensors ``arrays`` (NumPy or Dask, by name in file order) read from ``p``.

    Checks that every tensor is a Linear layer's weight or bias and orders the layers (see
    :func:`read_layer_chain`); ``shards`` maps each tensor to its shard file (sharded files).
    """
    if not arrays:
        raise NetworkError(f"{p}: holds no tensors")
    modules: dict = {}
    foreign = []
    for name, a in arrays.items():
        module, _, leaf = name.rpartition(".")
        kind = dtypes[name]
        if leaf not in ("weight", "bias") or not kind.startswith(("float", "bfloat")):
            why = "not a float tensor" if leaf in ("weight", "bias") else "not a weight or bias"
            foreign.append(f"{name} ({kind} {list(a.shape)}, {why})")
        elif leaf == "weight" and a.ndim != 2:
            what = "a normalization layer" if a.ndim == 1 else "a convolution" if a.ndim > 2 else "a scalar"
            foreign.append(f"{name} ({kind} {list(a.shape)}, {what})")
        else:
            modules.setdefault(module, {})[leaf] = name
    for module, parts in modules.items():
        if "weight" not in parts:
            foreign.append(f"{parts['bias']} (a bias without a 2-D weight)")
    if foreign:
        raise NetworkError(
            f"{p}: balgraph balances chains of Linear layers (<module>.weight 2-D, <module>.bias 1-D),"
            f" and rescaling their hidden units would leave these other tensors stale: "
            + "; ".join(foreign[:6]) + (f"; and {len(foreign) - 6} more" if len(foreign) > 6 else "")
            + ". Save a state dict of the Linear layers only, or use balgraph.torch on the model"
        )
    names = list(modules)
    chain = _chain_order(p, format, names, {m: arrays[modules[m]["weight"]].shape for m in names}, order)
    mats = [arrays[modules[m]["weight"]] for m in chain]
    biases = []
    for m, w in zip(chain, mats):
        b_name = modules[m].get("bias")
        b = None if b_name is None else arrays[b_name]
        if b is not None and b.shape != (w.shape[0],):
            raise NetworkError(f"{p}: {b_name} has shape {list(b.shape)}; the layer has {w.shape[0]} outputs")
        biases.append(b)
    return LayerChain(p, format, chain, [modules[m]["weight"] for m in chain],
                      [modules[m].get("bias") for m in chain], mats, biases, dtypes, list(arrays), metadata, shards)


def _chains(order: list, shapes: dict) -> bool:
    return all(shapes[b][1] == shapes[a][0] for a, b in zip(order, order[1:]))


def _by_shapes(names: list, shapes: dict) -> list | None:
    """The unique order in which the shapes chain, or None (none, or several)."""
    outs = [shapes[m][0] for m in names]
    starts = [m for m in names if shapes[m][1] not in outs or len(names) == 1]
    if len(starts) != 1:
        return None
    order, left = [starts[0]], set(names) - {starts[0]}
    while left:
        nxt = [m for m in left if shapes[m][1] == shapes[order[-1]][0]]
        if len(nxt) != 1:
            return None
        order.append(nxt[0])
        left.discard(nxt[0])
    return order


def _chain_order(path: str, format: str, names: list, shapes: dict, order) -> list:
    def show(seq):
        return ", ".join(f"{m or '(root)'} {shapes[m][0]}x{shapes[m][1]}" for m in seq)

    if order is not None:
        order = [str(m) for m in order]
        if sorted(order) != sorted(names):
            raise NetworkError(f"{path}: order= must name each module once: the file has {names}")
        if not _chains(order, shapes):
            raise NetworkError(f"{path}: in the given order the layers do not chain ({show(order)})")
        return order
    natural = sorted(names, key=_natural_key)
    tries = [names, natural] if format == "torch" else [natural]
    for candidate in tries:
        if _chains(candidate, shapes):
            return candidate
    found = _by_shapes(names, shapes)
    if found is not None:
        return found
    first = tries[0]
    k = next(k for k in range(1, len(first)) if shapes[first[k]][1] != shapes[first[k - 1]][0])
    raise NetworkError(
        f"{path}: the Linear layers do not chain in module order: {first[k] or '(root)'}.weight expects"
        f" {shapes[first[k]][1]} inputs but {first[k - 1] or '(root)'}.weight gives"
        f" {shapes[first[k - 1]][0]} outputs (layers, out x in: {show(first)}); pass the order"
        " (balgraph.io.read_layer_chain(path, order=[...]))"
    )
