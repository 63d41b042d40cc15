"""What every platform (the direct runner, the SLURM bridge) does the same way.

Both follow the jobs topic with the production fold (:mod:`.follower`), read a
job's input files the same way (:mod:`.inputs`), describe how a task's process
ended in one record (:mod:`.outcome`), and end jobs alike: the merge of the
completed tasks' results, JobCompleted / JobFailed, JobCanceled (:mod:`.finish`).
So a job gives the same result and the same event history whichever platform
ran it.
"""
