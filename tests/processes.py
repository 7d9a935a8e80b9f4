"""Shared helper of the fault tests: kill a child process at a known point.

Example:

```python
from tests.processes import kill_when_ready

pid = kill_when_ready([sys.executable, "-c", SCRIPT, str(path)], "writing")
```
"""

from __future__ import annotations

import subprocess


def kill_when_ready(argv, ready_line: str, env=None) -> int:
    """Runs ``argv``, waits for ``ready_line`` on its stdout, SIGKILLs it.

    SIGKILL runs no clean-up code in the child, as a power cut or the OOM
    killer would. Returns the child's PID (staging names carry it).
    """
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline().strip()
        assert line == ready_line, f"child printed {line!r}, not {ready_line!r}"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    return child.pid
