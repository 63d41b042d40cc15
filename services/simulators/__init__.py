"""Simulator plug-ins, shared by every platform (the runner and the SLURM bridge).

A plug-in turns one task of a job (input files, primaries, seed) into files and a
command line, reads progress from the simulator's output, and collects its
outputs into the estimator/page JSON that :mod:`services.simulators.merge`
merges. The runner writes the files into a local work directory; the SLURM
bridge uploads the same files over SFTP: neither knows a simulator's formats.
"""
