"""The built-in Monte Carlo engine (``sim_type`` "builtin").

A condensed-history transport code for protons, 4He and 12C ions written with
NumPy, run as a subprocess like any other simulator
(``python -m services.engine -N <seed> <workdir>``). It reads the four
SHIELD-HIT12A input files within the subset documented in
:mod:`services.engine.input`, prints SHIELD-HIT12A-style progress lines and
writes one estimator JSON file per Output block.

Modules, one job each:

* :mod:`~services.engine.input` - parsing and checking the four files (the subset);
* :mod:`~services.engine.materials`, :mod:`~services.engine.particles` - data;
* :mod:`~services.engine.stopping` - Bethe stopping powers, CSDA range tables;
* :mod:`~services.engine.scattering` - Highland multiple scattering;
* :mod:`~services.engine.nuclear` - removal of primaries by nuclear interactions;
* :mod:`~services.engine.geometry` - bodies, zones, distances (vectorised);
* :mod:`~services.engine.source` - sampling the beam;
* :mod:`~services.engine.transport` - the stepping loop;
* :mod:`~services.engine.scoring` - detectors and quantities;
* :mod:`~services.engine.output` - estimator JSON;
* :mod:`~services.engine.run`, :mod:`~services.engine.cli` - a run, the command line.
"""
