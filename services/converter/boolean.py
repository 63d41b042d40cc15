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

Geometry helps too: given a ``disjoint(m, n)`` test (bodies whose bounding
boxes do not overlap), a term inside two disjoint bodies is empty, and a
term inside a body disjoint from ``n`` already lies outside ``n`` — so
subtracting something far away leaves it as it is instead of splitting it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Term = frozenset[int]
Dnf = frozenset[Term]
Disjoint = Callable[[int, int], bool]

#: Nothing (no term).
EMPTY: Dnf = frozenset()

#: More terms than this in one zone is refused: the geometry is too entangled to be
#: written out (and expanding it further would cost more time than a request may take).
MAX_TERMS = 256
#: One step may expand into this many times the limit before it is simplified.
EXPANSION_FACTOR = 32


class TooComplex(Exception):
    """A zone's normal form would exceed :data:`MAX_TERMS` terms."""


def _never(_a: int, _b: int) -> bool:
    return False


def body(number: int) -> Dnf:
    """Inside body ``number``."""
    return frozenset({frozenset({number})})


def _empty(term: Term, disjoint: Disjoint) -> bool:
    if any(-n in term for n in term):
        return True
    inside = sorted(n for n in term if n > 0)
    return any(disjoint(a, b) for i, a in enumerate(inside) for b in inside[i + 1:])


def simplify(terms: Iterable[Term], disjoint: Disjoint = _never,
             limit: int = MAX_TERMS) -> Dnf:
    """The terms without empty ones and without ones that contain another.

    Raises:
        TooComplex: more than ``limit`` terms remain.
    """
    return _minimal([t for t in set(terms) if not _empty(t, disjoint)], limit)


def _minimal(terms: list[Term], limit: int) -> Dnf:
    terms = sorted(set(terms), key=len)
    result: list[Term] = []
    for term in terms:
        if not any(other <= term for other in result):
            result.append(term)
            if len(result) > limit:
                raise TooComplex
    return frozenset(result)


def union(a: Dnf, b: Dnf, disjoint: Disjoint = _never) -> Dnf:
    """``a OR b``.

    Raises:
        TooComplex: the result has too many terms.
    """
    return simplify(a | b, disjoint)


def intersection(a: Dnf, b: Dnf, disjoint: Disjoint = _never) -> Dnf:
    """``a AND b``.

    Raises:
        TooComplex: the result has (or its expansion would have) too many terms.
    """
    if len(a) * len(b) > EXPANSION_FACTOR * MAX_TERMS:
        raise TooComplex
    return simplify((x | y for x in a for y in b), disjoint)


def difference(a: Dnf, b: Dnf, disjoint: Disjoint = _never, limit: int = MAX_TERMS) -> Dnf:
    """``a AND NOT b``, one term of ``b`` at a time (De Morgan on each).

    A term of ``a`` that already lies outside a removed term (it holds the opposite
    of one of its literals, or lies in a body disjoint from one of its bodies) stays
    whole; any other term splits into one term per literal of the removed term.

    Raises:
        TooComplex: the result (or a step towards it) has more than ``limit`` terms.
    """
    result = a
    for removed in sorted(b, key=sorted):
        expanded: list[Term] = []
        for term in result:
            inside = [n for n in term if n > 0]
            if any(-n in term or (n > 0 and any(disjoint(m, n) for m in inside))
                   for n in removed):
                expanded.append(term)
                continue
            for n in removed:
                # term AND NOT n: empty if term is inside n, or if n < 0 and the body -n
                # it must now be inside is disjoint from one it is inside already.
                if n in term or (n < 0 and any(disjoint(m, -n) for m in inside)):
                    continue
                expanded.append(term | {-n})
            if len(expanded) > EXPANSION_FACTOR * limit:
                raise TooComplex
        result = _minimal(expanded, limit)
    return result


def ordered(dnf: Dnf) -> list[list[int]]:
    """The terms in a stable order: bodies inside first, then outside, each ascending."""
    terms = [sorted(t, key=lambda n: (n < 0, abs(n))) for t in dnf]
    terms.sort(key=lambda t: (len(t), [(n < 0, abs(n)) for n in t]))
    return terms
