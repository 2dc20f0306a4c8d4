"""The one validation path: every entry point checks its inputs with these functions.

Networks (graphs, edge arrays, layer matrices, PyTorch models, files) and options (``p``,
``tol``, ``max_iter``, ``seed``, choices) are checked here, so that the same mistake gets the
same message through every door: it names the edge, unit, array or option at fault and says
what to do. Network data raise :class:`~balgraph.errors.NetworkError`, arguments
:class:`~balgraph.errors.OptionError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np

from .backend import module_of, to_host
from .errors import NetworkError, OptionError, name_some
from .lazy import compute, is_lazy

__all__ = ["shown", "positive_number", "check_p", "check_tol", "check_count", "check_seed", "check_choice",
           "real_weights", "ensure_finite", "check_length", "check_indices", "check_labels"]


def shown(value, limit: int = 40) -> str:
    """``repr(value)``, shortened for messages (a 400-digit integer is not worth printing)."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-8:]} ({len(text)} characters)"


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def positive_number(value, what: str, error: type[Exception] = OptionError, *, allow_inf: bool = False) -> float:
    """``value`` as a float ``> 0`` (finite unless ``allow_inf``), else ``error`` naming ``what``.

    >>> positive_number(2, "p")
    2.0
    """
    number = float(value) if _is_real_number(value) else float("nan")
    if not (number > 0 and (allow_inf or number != float("inf"))):
        kind = "" if _is_real_number(value) else f" (a {type(value).__name__})"
        raise error(f"{what} must be a {'' if allow_inf else 'finite '}number > 0, got {value!r}{kind}")
    return number


def check_p(p) -> float:
    """The exponent ``p`` of the L_p cost: a number ``> 0``, or ``inf`` for max-balancing."""
    return positive_number(p, "p", allow_inf=True)


def check_tol(tol) -> float:
    """A per-unit relative-imbalance tolerance: a finite number in ``(0, 1)``."""
    value = positive_number(tol, "tol")
    if value >= 1.0:
        raise OptionError(f"tol must be below 1 (a relative imbalance lies in [0, 1]), got {tol!r}")
    return value


def check_count(value, what: str, *, minimum: int = 0, allow_none: bool = True) -> int | None:
    """A whole number ``>= minimum`` (``None`` allowed when ``allow_none``), else :class:`OptionError`."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise OptionError(f"{what} must be a whole number >= {minimum}, got {value!r} (a {type(value).__name__})")
    if value < minimum:
        raise OptionError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed) -> int | None:
    """A random seed: ``None`` or a whole number ``>= 0``."""
    return check_count(seed, "seed")


def check_choice(value, what: str, choices: Sequence) -> object:
    """``value`` if it is one of ``choices``, else :class:`OptionError` listing them."""
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise OptionError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def real_weights(values, what: str, describe: Callable[[int], str] | None = None, *,
                 copy: bool = False, finite: bool = True):
    """Check that ``values`` are finite real numbers and return them as an array.

    NumPy, CuPy and Dask arrays keep their module and their real floating dtype (no copy unless
    ``copy``); integers become float64; anything else (lists, objects) is converted to
    float64. Complex, non-numeric, NaN and infinite entries raise :class:`NetworkError` naming
    ``what`` and, through ``describe(index)``, the first offending entry. ``finite=False``
    leaves the finiteness to :func:`ensure_finite` (many Dask arrays in one round trip); on a
    Dask array the check is one reduction, and the offending entry is looked for only on failure.

    >>> real_weights([1, 2.5], "weights").tolist()
    [1.0, 2.5]
    """
    arr = values if hasattr(values, "dtype") and hasattr(values, "shape") else None
    if arr is None:
        arr = _as_float_array(values, what, describe)
    kind = arr.dtype.kind
    if kind == "c":
        xp = module_of(arr)
        flat = int(to_host(xp.argmax(xp.imag(arr).ravel() != 0)))
        where = describe(flat) if describe is not None else f"entry {np.unravel_index(flat, arr.shape)}"
        value = to_host(arr.ravel()[flat:flat + 1])[0]
        raise NetworkError(f"{what}: weight {shown(value)} at {where} is complex ({arr.dtype}): balancing needs real"
                           " weights; pass the real part (W.real) only if the imaginary part is truly zero")
    if kind in "biu":
        arr = arr.astype(np.float64)
    elif kind != "f":
        arr = _as_float_array(to_host(arr), what, describe)
    elif copy:
        arr = arr.copy()
    if not finite:
        return arr
    xp = module_of(arr)
    finite = xp.isfinite(arr)
    if not bool(finite.all()):
        flat = int(to_host(xp.argmin(finite.ravel())))
        index = np.unravel_index(flat, arr.shape) if arr.ndim > 1 else flat
        where = describe(flat) if describe is not None else f"entry {index}"
        bad = int(to_host((~finite).sum()))
        value = to_host(arr.ravel()[flat:flat + 1])[0]
        raise NetworkError(f"{what}: {bad} weight(s) are NaN or infinite, e.g. {shown(value)} at {where};"
                           " replace them with finite numbers")
    return arr


def ensure_finite(arrays: Sequence[tuple]) -> None:
    """Check ``(array, what, describe)`` triples for NaN and infinite entries, as :func:`real_weights`.

    The Dask arrays among them are reduced in one round trip (one ``isfinite(...).all()`` each);
    the first array that fails is searched for its offending entry and named.
    """
    flags = compute(*[module_of(a).isfinite(a).all() if is_lazy(a) else True for a, _, _ in arrays])
    for (a, what, describe), ok in zip(arrays, flags):
        if not is_lazy(a) or not bool(ok):
            real_weights(a, what, describe)


def _as_float_array(values, what, describe) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as exc:
        if "inhomogeneous" in str(exc):
            raise NetworkError(f"{what} is ragged (rows of different lengths): give a rectangular array") from None
        try:
            arr = np.asarray(values, dtype=object)
        except (TypeError, ValueError):
            raise NetworkError(f"{what} must be an array of real numbers ({exc})") from None
    if arr.dtype.kind == "c":
        return arr
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        pass
    flat = arr.ravel()
    for k, value in enumerate(flat.tolist()):
        try:
            complex_value = complex(value)
        except OverflowError:
            raise NetworkError(f"{what}: weight {shown(value)} at {describe(k) if describe is not None else f'entry {k}'}"
                               " is beyond float64's range (about 1.8e308): rescale the network first") from None
        except (TypeError, ValueError):
            complex_value = None
        where = describe(k) if describe is not None else f"entry {k}"
        if complex_value is None or isinstance(value, (str, bytes)):
            raise NetworkError(f"{what}: weight {shown(value)} at {where} is not a number: give real numbers")
        if complex_value.imag != 0:
            raise NetworkError(f"{what}: weight {shown(value)} at {where} is complex: balancing needs real weights")
        try:
            float(value)
        except OverflowError:
            raise NetworkError(f"{what}: weight {value!r} at {where} is beyond float64's range"
                               " (about 1.8e308): rescale the network first") from None
    raise NetworkError(f"{what} must be an array of real numbers")


def check_length(values, n: int, what: str, unit: str = "unit") -> list | np.ndarray:
    """``values`` (a sequence or array) if it has exactly ``n`` entries, else :class:`NetworkError`."""
    size = len(values) if not hasattr(values, "size") else int(values.size)
    if size != n:
        raise NetworkError(f"{what} must hold one entry per {unit} ({n}), got {size}")
    return values


def check_indices(values, n: int, what: str) -> np.ndarray:
    """Integer node indices in ``[0, n)`` as int64, else :class:`NetworkError`."""
    arr = np.asarray(values)
    if arr.size and arr.dtype.kind not in "iu":
        raise NetworkError(f"{what} must hold integer node indices, got dtype {arr.dtype}:"
                           " cast with .astype(int) if the values are whole numbers")
    arr = arr.astype(np.int64, copy=False).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = int(arr[(arr < 0) | (arr >= n)][0])
        raise NetworkError(f"{what} holds node index {bad}, outside [0, {n}): give indices of existing units")
    return arr


def check_labels(labels: Sequence, what: str, nodes: Sequence) -> list:
    """Per-unit labels (ties, groups) that are hashable, else :class:`NetworkError` naming the unit."""
    labels = list(labels)
    bad = []
    for k, label in enumerate(labels):
        try:
            hash(label)
        except TypeError:
            bad.append(nodes[k])
    if bad:
        raise NetworkError(f"{what} of unit(s) {name_some(bad)} are not hashable (lists or dicts?):"
                           " use strings, numbers or tuples")
    return labels
