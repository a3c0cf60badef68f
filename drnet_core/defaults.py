"""Defaults that several modules (and the app) read, each defined once, with the reason for its value."""
from __future__ import annotations

# Images per forward pass wherever a whole set is evaluated, and the batch at which `bench` and the
# "time" cost measure and report their timings: large enough to keep a CPU's cores busy, small enough
# that the executor's buffers (a 32x14x14 float map of 256 images is 6.4 MB) are reused rather than refetched.
BATCH_SIZE = 256

# The Gumbel-Softmax temperatures the app's sliders offer: every temperature the recipe trains at
# (1.5 down to 0.5) and the shipped default (0.25), with room on both sides.
TAU_MIN, TAU_MAX = 0.1, 4.0

# The largest image upload, in MiB. Streamlit reads its own limit from .streamlit/config.toml
# (server.maxUploadSize), which must hold this same number (tests/test_defaults.py checks it).
MAX_UPLOAD_MB = 10

# Training images a run holds out to choose its default tau and threshold (the test split never
# takes part in a choice), and the seed of its split, weights and data order. Read by training and
# by whoever must find a finished run's held-out images again.
VAL_SIZE = 5000
SEED = 0
