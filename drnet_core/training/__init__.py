"""Training: the phase registry, objectives, the epoch loop, resumable runs, the routing monitor."""
