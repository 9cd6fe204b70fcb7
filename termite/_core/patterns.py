"""Receive patterns: plain Python data that describes the messages to take.

The paper's ``recv`` selects a message by pattern and destructures it.  In
termite, ``receive(*patterns)`` selects (the first message, in arrival order,
that matches any pattern) and a ``match`` statement destructures:

    match await receive((Pid, Tag, "ref"), ("set!", ANY)):
        case (sender, tag, "ref"): ...
        case ("set!", value): ...

What a pattern is:

=====================  =====================================================
``ANY``                any message or element
a class (``int``)      an instance of it (``isinstance``)
``(p1, p2, ...)``      a tuple of that length, element by element; a final
                       ``...`` allows any further elements
a namedtuple instance  an instance of that namedtuple, element by element
``[p1, p2]``           a list, the same way
``{key: p}``           a mapping that has these keys, values matching
a function             a predicate: matches when it returns true
``where(p, guard)``    ``p``, and then ``guard(message)`` is true
anything else          a value compared with ``==`` (``None``, ``True``,
                       ``False`` by identity, as in ``match``); this is how
                       a value bound in the enclosing scope (the paper's
                       ``,tag``) is written: just use the variable
=====================  =====================================================
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Mapping

from termite._core.errors import PatternError

__all__ = ["ANY", "where", "compile_patterns"]


class _AnyType:
    __slots__ = ()

    def __repr__(self):
        return "ANY"

    def __reduce__(self):
        return "ANY"


#: The wildcard: matches any message, or any element of one.
ANY = _AnyType()


class where:
    """A pattern with a guard: matches when ``pattern`` does and ``guard(message)`` is true."""

    __slots__ = ("pattern", "guard")

    def __init__(self, pattern, guard):
        if not callable(guard):
            raise PatternError(f"where() needs a callable guard, got {guard!r}; write where(pattern, lambda msg: ...)")
        self.pattern = pattern
        self.guard = guard

    def __repr__(self):
        return f"where({self.pattern!r}, {self.guard!r})"


def _always(_msg):
    return True


def _compile(p, path: str):
    """One pattern to a function message -> bool."""
    if p is ANY or p is object:
        return _always
    cls = p.__class__
    if cls is where:
        inner, guard = _compile(p.pattern, path), p.guard
        return lambda m: inner(m) and guard(m)
    if cls is tuple or (isinstance(p, tuple) and hasattr(cls, "_fields")):
        return _compile_sequence(p, cls, path)
    if cls is list:
        return _compile_sequence(p, list, path)
    if cls is dict:
        items = [(k, _compile(v, f"{path}[{k!r}]")) for k, v in p.items()]

        def match_mapping(m):
            if not isinstance(m, Mapping):
                return False
            for k, sub in items:
                if k not in m or not sub(m[k]):
                    return False
            return True

        return match_mapping
    if isinstance(p, type):
        return lambda m: isinstance(m, p)
    if isinstance(p, (typing._GenericAlias, types.GenericAlias, types.UnionType)) and not isinstance(p, type):
        if isinstance(p, types.UnionType):
            return lambda m: isinstance(m, p)
        raise PatternError(
            f"pattern {path} is {p!r}, a typing generic that isinstance cannot test; "
            f"use the plain class ({typing.get_origin(p).__name__}) or a predicate"
        )
    if inspect.iscoroutine(p) or inspect.isgenerator(p) or inspect.isawaitable(p):
        raise PatternError(
            f"pattern {path} is {p!r}, which no message can equal; pass a predicate "
            "function itself, without calling it"
        )
    if cls is float and math.isnan(p):
        raise PatternError(f"pattern {path} is NaN, which equals nothing; use a predicate such as math.isnan")
    if callable(p) and isinstance(p, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return p
    if p is None or p is True or p is False:
        return lambda m: m is p
    if isinstance(p, tuple):  # a Tag, say: a plain tuple with equal items is not it
        return lambda m: m.__class__ is cls and m == p
    return lambda m: m == p


def _compile_sequence(p, kind, path):
    subs = list(p)
    open_ended = bool(subs) and subs[-1] is Ellipsis
    if open_ended:
        subs.pop()
    if Ellipsis in subs:
        raise PatternError(f"pattern {path} has ... before its end; ... may only close a tuple or list pattern")
    n = len(subs)
    checks = [(i, _compile(s, f"{path}[{i}]")) for i, s in enumerate(subs)]
    checks = [(i, f) for i, f in checks if f is not _always]
    exact = kind is tuple or kind is list

    def match_sequence(m):
        if exact:
            if m.__class__ is not kind:
                return False
        elif not isinstance(m, kind):
            return False
        if (len(m) < n) if open_ended else (len(m) != n):
            return False
        for i, f in checks:
            if not f(m[i]):
                return False
        return True

    return match_sequence


def compile_patterns(patterns: tuple, guard=None):
    """Patterns (alternatives) and an optional guard to one function message -> bool."""
    if guard is not None and not callable(guard):
        raise PatternError(f"where= needs a callable guard, got {guard!r}; write where=lambda msg: ...")
    if not patterns:
        return guard
    matchers = [_compile(p, f"#{i}") for i, p in enumerate(patterns)]
    if len(matchers) == 1:
        first = matchers[0]
    else:

        def first(m):
            for f in matchers:
                if f(m):
                    return True
            return False

    if guard is None:
        return first
    return lambda m: first(m) and guard(m)
