"""stvr-model: the warp LSTM re-localization detector and its recurrent baselines.

Feng et al., "Spatio-temporal Video Re-localization by Warp LSTM", CVPR 2019, §3-4.
"""

__version__ = "0.1.0"
