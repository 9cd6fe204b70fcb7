"""Code fingerprints: each captured frame carries one, so a node with other code refuses it.

``fingerprint(code) -> bytes`` digests what the code does (bytecode, exception
table, constants, names, flags, argument counts), not where it comes from
(addresses, file names, line numbers): the same function on two nodes has
the same fingerprint, and any change to what it runs changes it.
"""

from __future__ import annotations

import hashlib
import types

__all__ = ["fingerprint"]

_fingerprints: dict[int, tuple] = {}  # id(code) -> (code, fingerprint); the code is kept so the id stays its own


def fingerprint(code: types.CodeType) -> bytes:
    """A 16-byte digest of what the code does: bytecode, constants, names; not addresses, files or lines."""
    entry = _fingerprints.get(id(code))
    if entry is None:
        key = (code.co_code, code.co_exceptiontable, code.co_names, code.co_varnames, code.co_cellvars,
               code.co_freevars, code.co_flags, code.co_argcount, code.co_posonlyargcount,
               code.co_kwonlyargcount, code.co_stacksize, tuple(map(_const_key, code.co_consts)))
        if len(_fingerprints) >= 4096:
            _fingerprints.clear()
        entry = _fingerprints[id(code)] = (code, hashlib.blake2b(repr(key).encode(), digest_size=16).digest())
    return entry[1]


def _const_key(const):
    if isinstance(const, types.CodeType):
        return fingerprint(const)
    if isinstance(const, tuple):
        return tuple(map(_const_key, const))
    if isinstance(const, frozenset):  # its order depends on string hashing, which differs per process
        return sorted(repr(_const_key(c)) for c in const)
    return type(const).__name__, const  # 1, 1.0 and True are equal but not the same constant
