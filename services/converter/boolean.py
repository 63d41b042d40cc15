"""Zones as geo.dat writes them: unions (OR) of intersections of signed bodies.

geo.dat has no parentheses: a zone is ``+a -b OR +c ...``, a union of
intersections in which ``+n`` means inside body n and ``-n`` outside. The
editor's zones (rows of union / intersection / subtraction applied left to
right, rows joined by union) and the world zone (its body minus every other
zone) are therefore brought into that disjunctive normal form here.

A :data:`Dnf` is a frozenset of terms; a term is a frozenset of signed body
numbers. Terms holding both ``n`` and ``-n`` are empty and dropped; a term
that contains another term is redundant and dropped, which keeps nested
shells (each zone a figure minus the one inside it) linear in size.
"""

from __future__ import annotations

from collections.abc import Iterable

Term = frozenset[int]
Dnf = frozenset[Term]

#: Nothing (no term).
EMPTY: Dnf = frozenset()
#: Everything (one term without conditions).
EVERYTHING: Dnf = frozenset({frozenset()})

#: More terms than this in one zone (or in one step towards it) is refused: the
#: geometry is too entangled to be written out.
MAX_TERMS = 400


class TooComplex(Exception):
    """A zone's normal form would exceed :data:`MAX_TERMS` terms."""


def body(number: int) -> Dnf:
    """Inside body ``number``."""
    return frozenset({frozenset({number})})


def _simplify(terms: Iterable[Term]) -> Dnf:
    kept = [t for t in set(terms) if not any(-n in t for n in t)]
    kept.sort(key=len)
    result: list[Term] = []
    for term in kept:
        if not any(other <= term for other in result):
            result.append(term)
    if len(result) > MAX_TERMS:
        raise TooComplex
    return frozenset(result)


def union(a: Dnf, b: Dnf) -> Dnf:
    """``a OR b``.

    Raises:
        TooComplex: the result has too many terms.
    """
    return _simplify(a | b)


def intersection(a: Dnf, b: Dnf) -> Dnf:
    """``a AND b``.

    Raises:
        TooComplex: the result has (or its expansion would have) too many terms.
    """
    if len(a) * len(b) > MAX_TERMS * MAX_TERMS:
        raise TooComplex
    return _simplify(x | y for x in a for y in b)


def complement(a: Dnf) -> Dnf:
    """``NOT a`` (De Morgan, expanded back into a union of intersections).

    Raises:
        TooComplex: the result has too many terms.
    """
    result = EVERYTHING
    for term in sorted(a, key=sorted):
        result = intersection(result, frozenset(frozenset({-n}) for n in term))
    return result


def difference(a: Dnf, b: Dnf) -> Dnf:
    """``a AND NOT b``.

    Raises:
        TooComplex: the result has too many terms.
    """
    result = a
    for term in sorted(b, key=sorted):
        result = intersection(result, frozenset(frozenset({-n}) for n in term))
    return result


def ordered(dnf: Dnf) -> list[list[int]]:
    """The terms in a stable order: bodies inside first, then outside, each ascending."""
    terms = [sorted(t, key=lambda n: (n < 0, abs(n))) for t in dnf]
    terms.sort(key=lambda t: (len(t), [(n < 0, abs(n)) for n in t]))
    return terms
