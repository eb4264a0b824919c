#!/usr/bin/python3
"""The rootless pass's namespace helper (benches/bench.py starts it; not for direct use).

Started as the ordinary bench user. It enters a new user + mount namespace, waits until the
driver has written its id maps with newuidmap/newgidmap (root of the namespace = the user, ids
1..N = the user's subordinate range, as rootless podman maps them), makes its mounts private,
and then runs what the driver (root, outside the namespace) sends it: one JSON request per line
on stdin, one JSON answer per line on stdout. The driver times each request from outside and
drops the caches itself, so this process only starts commands and waits for them.

Request: {"cmds": [[argv...], ...], "timeout": s, "capture": bool, "cwd": dir, "log": file}
  every argv starts at once; the answer comes when all have exited:
  {"rc": [...], "out": [...], "err": [...], "timeout": bool}
"""

import ctypes
import json
import os
import subprocess
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000


def answer(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(req: dict) -> dict:
    capture = req.get("capture", False)
    timeout = req.get("timeout") or 600
    logf = open(req["log"], "w") if req.get("log") else None
    procs = []
    try:
        for argv in req["cmds"]:
            if logf:
                out, err = logf, subprocess.STDOUT
            else:
                out = subprocess.PIPE if capture else subprocess.DEVNULL
                err = subprocess.PIPE
            procs.append(subprocess.Popen(argv, cwd=req.get("cwd"), stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=err, text=True))
    except OSError as e:
        for p in procs:
            p.kill()
            p.wait()
        return dict(rc=[127] * len(req["cmds"]), out=[""] * len(req["cmds"]),
                    err=[str(e)] * len(req["cmds"]), timeout=False)
    finally:
        if logf:
            logf.close()
    deadline = time.monotonic() + timeout
    res = dict(rc=[], out=[], err=[], timeout=False)
    for p in procs:
        try:
            o, e = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            res["timeout"] = True
            p.kill()
            o, e = p.communicate()
        res["rc"].append(p.returncode)
        res["out"].append(o or "")
        res["err"].append((e or "")[-2000:])
    return res


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        answer(dict(error=f"unshare: {os.strerror(ctypes.get_errno())}"))
        return 1
    answer(dict(pid=os.getpid()))
    if sys.stdin.readline().strip() != "mapped":
        return 1
    # the maps are written: we are root here, with the capabilities of this namespace
    p = subprocess.run(["mount", "--make-rprivate", "/"], capture_output=True, text=True)
    if p.returncode != 0:
        answer(dict(error=f"mount --make-rprivate /: {p.stderr.strip()}"))
        return 1
    answer(dict(ready=True, uid=os.getuid(), gid=os.getgid()))
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("exit"):
            break
        answer(run(req))
    return 0


if __name__ == "__main__":
    sys.exit(main())
