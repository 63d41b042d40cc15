"""Physical constants of the engine, each with its source.

Values are CODATA 2018 (via the Particle Data Group's *Review of Particle
Physics*, "Physical constants" table) unless stated otherwise; energies in MeV,
lengths in cm, masses per mole in g/mol.
"""

from __future__ import annotations

ELECTRON_MASS_MEV = 0.51099895
"""m_e c^2 (CODATA 2018)."""

PROTON_MASS_MEV = 938.27208816
"""m_p c^2 (CODATA 2018)."""

ATOMIC_MASS_UNIT_MEV = 931.49410242
"""u c^2 (CODATA 2018)."""

BETHE_K = 0.307075
"""K = 4 pi N_A r_e^2 m_e c^2 in MeV cm^2/mol (PDG, "Passage of particles through matter")."""

FINE_STRUCTURE = 1.0 / 137.035999084
"""alpha (CODATA 2018)."""

AVOGADRO = 6.02214076e23
"""N_A in 1/mol (exact since the 2019 SI)."""

MEV_PER_G_TO_GY = 1.602176634e-10
"""1 MeV/g in Gy (J/kg): 1.602176634e-13 J / 1e-3 kg (the electron-volt is exact in the SI)."""

HIGHLAND_MEV = 13.6
"""The Highland constant (PDG form of the Highland formula, Lynch & Dahl 1991)."""

HIGHLAND_LOG = 0.038
"""Coefficient of the logarithmic term of the Highland formula (PDG)."""

MILLIBARN_CM2 = 1.0e-27
"""1 mb in cm^2."""
