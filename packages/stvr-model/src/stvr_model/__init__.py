"""stvr-model: the warp LSTM re-localization detector and its recurrent baselines.

Feng et al., "Spatio-temporal Video Re-localization by Warp LSTM", CVPR 2019, §3-4.
"""

import os

__version__ = "0.1.0"

# OpenMP's wait policy, the one threading setting of this package. torch's OpenMP runtime
# (libgomp) lets idle worker threads spin for a while after every parallel op by default.
# When other processes (loader workers, other jobs) hold the cores, those spinning threads
# take CPU time from the thread doing the work: measured on 2 shared cores at load 6, the
# warp op's median went from 2-3 ms to 27-130 ms forward. PASSIVE threads sleep at once.
# libgomp reads it once, when torch is first imported, so it is set here, before any
# module of this package imports torch; a value the user set is kept.
OPENMP_WAIT_POLICY = "PASSIVE"
os.environ.setdefault("OMP_WAIT_POLICY", OPENMP_WAIT_POLICY)
