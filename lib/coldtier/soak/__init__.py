"""The soak: the whole job for hours under random faults (``scripts/soak.sh``, ``make soak``)."""
