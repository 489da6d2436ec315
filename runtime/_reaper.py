"""Stops what a local Ray left running once the process that started it is gone.

``ray.init`` starts a local cluster under the driver. Ray ties the raylet to the driver's
life, but the agents the raylet starts (DashboardAgent, RuntimeEnvAgent) outlive a
driver killed with -9, and the GCS lingers. ``ensure_ray`` starts this watcher, in a
session of its own, with the read end of a pipe whose write end only the driver holds:
the pipe closes when the driver exits, however it exits. The watcher then stops every
process of that Ray session — the ones it was given, anything below them, and anything
holding a file in the session's directory (each Ray process logs there) — and exits.

Run as ``python _reaper.py SESSION_DIR PID...`` with the pipe as stdin; it imports
nothing from tether, so it starts fast and outlives any change to the package.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    if os.fork():  # the driver waits for this first process only: it returns at once
        os._exit(0)
    import psutil

    inside, pids = argv[0].rstrip(os.sep) + os.sep, [int(p) for p in argv[1:]]
    known = []
    for pid in pids:  # identified now, with their start times: a reused pid is not them
        try:
            known.append(psutil.Process(pid))
        except psutil.Error:
            continue
    while os.read(0, 4096):  # nothing is ever written: this returns at end of file
        pass
    found = {p.pid: p for p in known if p.is_running()}
    for p in psutil.process_iter():
        if p.pid == os.getpid() or p.pid in found:
            continue
        try:
            if any(f.path.startswith(inside) for f in p.open_files()):
                found[p.pid] = p
        except psutil.Error:
            continue
    for p in list(found.values()):
        try:
            found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.Error:
            continue
    stopping = list(found.values())
    for p in stopping:
        try:
            p.terminate()
        except psutil.Error:
            continue
    _, left = psutil.wait_procs(stopping, timeout=5)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            continue


if __name__ == "__main__":
    main(sys.argv[1:])
