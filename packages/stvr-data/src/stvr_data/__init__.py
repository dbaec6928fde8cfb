"""stvr-data: build the spatio-temporal video re-localization benchmark and score it.

Feng et al., "Spatio-temporal Video Re-localization by Warp LSTM", CVPR 2019, §5.
This package has no torch dependency so that any group can build the benchmark and
score its detections with it.
"""

__version__ = "0.1.0"
