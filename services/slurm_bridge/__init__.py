"""The batch platform: jobs run on SLURM clusters reached over SSH (asyncssh).

Modules, from the outside in: :mod:`.bridge` (the service), :mod:`.cluster`
(one cluster's operations), :mod:`.ssh` (the transport), :mod:`.commands`
(pure SLURM command builders and output parsers), :mod:`.scripts` and
:mod:`.submission` (what a job becomes on a cluster), :mod:`.options` (the
allow-list of SLURM options), :mod:`.tracking` (reading task states and progress).
"""
