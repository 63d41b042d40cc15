"""What each conversion target accepts: one table, consulted wherever the converter decides.

Two targets read the same SHIELD-HIT12A files: SHIELD-HIT12A itself and the
built-in engine, which implements a subset of them (the subset agreed between
the engine and this converter; the engine's input parser is the authority).
A project that needs more than its target offers is refused with the JSON
path of the part, before a job exists.
"""

from __future__ import annotations

from dataclasses import dataclass

#: SHIELD-HIT12A JPART0 codes the editor offers, with the nucleon number used when the
#: editor gives the energy in MeV but SHIELD-HIT12A wants MeV/nucleon (None: measured
#: in MeV). Heavy ions (25) take A from the project.
PARTICLES: dict[int, tuple[str, int | None]] = {
    1: ("neutron", None), 2: ("proton", None), 3: ("pi-", None), 4: ("pi+", None),
    5: ("pi0", None), 7: ("antiproton", None), 8: ("K-", None), 9: ("K+", None),
    10: ("K0", None), 11: ("K~", None), 15: ("mu-", None), 16: ("mu+", None),
    21: ("deuteron", 2), 22: ("triton", 3), 23: ("helium-3", 3), 24: ("helium-4", 4),
    25: ("heavy ion", 0),
}

#: Detector quantity keywords of SHIELD-HIT12A's detect.dat (as the editor names them).
SHIELDHIT_QUANTITIES = frozenset({
    "1MeVNEq", "Alanine", "AvgBeta", "AvgEnergy", "Dose", "DoseEqv", "DDD", "DoseGy",
    "dLET", "dQ", "dQeff", "Energy", "EqvDose", "Fluence", "MATERIAL", "NEqvDose", "NKERMA",
    "ZONE", "Rho", "tQ", "tQeff", "tLET", "dZ2Beta2", "tZ2Beta2", "dZeff2Beta2",
    "tZeff2Beta2",
})

#: Differential-scoring axes (``DiffNType``) of SHIELD-HIT12A.
SHIELDHIT_DIFF_TYPES = frozenset({
    "ANGLE", "DEDX", "E", "EAMU", "ENUC", "MDEDX", "TL", "Z", "Zeff", "Z2Beta2", "Zeff2Beta2",
})

#: Filter rule keywords, and whether their value must be an integer.
SHIELDHIT_FILTER_KEYS: dict[str, bool] = {
    "A": True, "AMASS": False, "AMU": False, "Z": True, "GEN": True, "E": False,
    "ENUC": False, "EAMU": False, "ID": True, "NPRIM": True,
}

#: Rule operators detect.dat can carry. The editor also offers ``!=``, which cannot be
#: written: ``!`` starts a comment in SHIELD-HIT12A's files.
FILTER_OPERATORS = ("==", "<", "<=", ">", ">=")

#: ``NKMedium`` keywords (dose to a medium other than the one scored in).
NK_MEDIA = frozenset({"A150", "AIR", "BONE", "Muscule", "TE_Methane", "TE_Propane", "WATER"})

#: ICRU/NIST material numbers SHIELD-HIT12A knows: 1-98 elements by Z, 99-278 compounds.
SHIELDHIT_ICRU = frozenset(range(1, 279))

BLACK_HOLE = 0
VACUUM = 1000


@dataclass(frozen=True)
class Target:
    """The capabilities of one target."""

    sim_type: str
    #: How messages name the target.
    label: str
    particles: frozenset[int]
    #: ``(A, Z)`` pairs allowed for heavy ions (JPART0 25); None: any.
    heavy_ions: frozenset[tuple[int, int]] | None
    icru: frozenset[int]
    #: How messages list the ICRU materials the target knows.
    icru_known: str
    quantities: frozenset[str]
    filter_keys: frozenset[str]
    detector_types: frozenset[str]
    #: Differential scoring (``Diff1``/``Diff2``): how many axes per quantity.
    max_modifiers: int
    #: ``Settings`` blocks (rescale, offset, primaries, medium) on quantities.
    quantity_settings: bool
    #: ``BEAMSAD`` (source-to-axis distance).
    beam_sad: bool
    #: ``USECBEAM`` (a beam source file).
    beam_source_file: bool
    #: A non-zero focus distance in ``BEAMDIV``.
    divergence_focus: bool

    def refuse(self, feature: str) -> str:
        """The reason text for a feature this target does not have."""
        return f"{feature} is not supported by {self.label} (sim_type {self.sim_type!r})"


SHIELDHIT = Target(
    sim_type="shieldhit", label="SHIELD-HIT12A",
    particles=frozenset(PARTICLES), heavy_ions=None, icru=SHIELDHIT_ICRU,
    icru_known="ICRU 1-278, 0 (black hole) and 1000 (vacuum)",
    quantities=SHIELDHIT_QUANTITIES, filter_keys=frozenset(SHIELDHIT_FILTER_KEYS),
    detector_types=frozenset({"Cyl", "Mesh", "Zone", "All"}), max_modifiers=2,
    quantity_settings=True, beam_sad=True, beam_source_file=True, divergence_focus=True,
)

BUILTIN = Target(
    sim_type="builtin", label="the built-in engine",
    particles=frozenset({2, 24, 25}), heavy_ions=frozenset({(4, 2), (12, 6)}),
    icru=frozenset({276, 104, 223, 119, 120}),
    icru_known="ICRU 276 (water), 104 (air), 223 (PMMA), 119 (compact bone), 120 (cortical "
               "bone), 0 (black hole) and 1000 (vacuum)",
    quantities=frozenset({"Dose", "DoseGy", "Fluence", "Energy", "dLET", "tLET"}),
    filter_keys=frozenset({"Z", "A", "GEN", "ID", "E"}),
    detector_types=frozenset({"Cyl", "Mesh"}), max_modifiers=0,
    quantity_settings=False, beam_sad=False, beam_source_file=False, divergence_focus=False,
)

#: Every target, by the ``sim_type`` that selects it.
TARGETS: dict[str, Target] = {t.sim_type: t for t in (SHIELDHIT, BUILTIN)}
