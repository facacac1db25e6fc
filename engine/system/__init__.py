"""Host-level operations: preflight checks, orphan cleanup, event queries.

``check.preflight`` answers "can this host run containers, and how?";
``orphans.find_orphans`` finds (and with ``fix``, removes) what crashed or
killed engine processes left behind in the kernel and on disk.
"""

from engine.system.check import Finding, HostProbe, choose_runtime, preflight
from engine.system.orphans import find_orphans

__all__ = ["Finding", "HostProbe", "choose_runtime", "find_orphans", "preflight"]
