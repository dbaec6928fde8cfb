"""The versions of the tools a benchmark was built with, recorded in its `dataset.json`.

A decoder or encoder change moves published scores (different frames, different
boxes-to-pixels rounding), so a card says which stvr-data, Python, ffmpeg, PyAV, pyarrow
and pandas wrote it. ffmpeg is the binary the media step runs (imageio-ffmpeg's), read
from its own ``ffmpeg -version``, not the version of a wrapper package.
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def ffmpeg_version() -> dict:
    """``{"version": first line of ffmpeg -version, "binary": its file name}`` of the
    ffmpeg that `stvr_data.media` runs (the name only: a card holds no local paths);
    the version is None when the binary does not run."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    try:
        run = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30, check=True)
        # "ffmpeg version n7.1 Copyright (c) ...": the version without the copyright notice
        first = run.stdout.splitlines()[0].split(" Copyright")[0].strip() if run.stdout else None
    except (OSError, subprocess.SubprocessError):
        first = None
    return {"version": first, "binary": Path(exe).name}


def tool_versions() -> dict:
    """Versions of stvr-data, Python, ffmpeg, PyAV, pyarrow and pandas in this process."""
    import av
    import pandas
    import pyarrow

    from stvr_data import __version__

    return {
        "stvr-data": __version__,
        "python": platform.python_version(),
        "ffmpeg": ffmpeg_version(),
        "pyav": av.__version__,
        "pyarrow": pyarrow.__version__,
        "pandas": pandas.__version__,
    }
