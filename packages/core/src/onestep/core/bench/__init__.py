"""``onestep bench``: distribution-matching objectives as one-step students, measured.

Parts: :mod:`.gmm` (2-D mixture, exact teacher), :mod:`.timing` (a DMD2 step against the sum of
its passes), :mod:`.digits` (the demo's DMD2 student against the digits teacher),
:mod:`.trajectory` and :mod:`.digits_traj` (consistency, flow and trajectory students on the 2-D
ring and on the digits teacher), :mod:`.report` (markdown, JSON, plot) and :mod:`.main`
(``bench_main(argv) -> int``).
"""

from onestep.core.bench.main import bench_main

__all__ = ["bench_main"]
