#!/usr/bin/env python3
"""unionfuse benchmark harness: the same workloads on ext4, kernel overlayfs,
fuse-overlayfs 1.10 / 2.0 and unionfuse (passthrough and not), interleaved,
a fresh mount per system and repetition, reported as ratios.

Driven by benches/run.sh (which builds the binary, installs the peers and
cleans up); see docs/performance.md. Standard library only, Python >= 3.11.
Needs root (mounts, drop_caches).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from dataclasses import dataclass, field

MiB = 1 << 20

# Mode parameters. Everything that decides the run time lives here.
MODES = {
    "quick": dict(
        reps=3, stack_files=10000, bigdir=10000, bigfile=256 * MiB, copyup=128 * MiB,
        untar=1000, fio_time=2, fio_reps=2, fio_region=256 * MiB, py="top", git_files=3000,
        scale_layers=[1, 10, 100, 500], scale_files=1000, rss_files=20000, timeout=120,
        fio_wsize=128 * MiB, c_files=40, ctr_files=2000, par_files=1500, par_untar=300,
        par_fio_time=1, par_reps=3, apt_reps=2, apt_pkg="python3",
    ),
    "full": dict(
        reps=5, stack_files=50000, bigdir=10000, bigfile=2048 * MiB, copyup=1024 * MiB,
        untar=20000, fio_time=10, fio_reps=3, fio_region=1024 * MiB, py="all", git_files=5000,
        scale_layers=[1, 10, 100, 500], scale_files=1000, rss_files=200000, timeout=900,
        fio_wsize=256 * MiB, c_files=300, ctr_files=20000, par_files=10000, par_untar=2000,
        par_fio_time=5, par_reps=3, apt_reps=3, apt_pkg="python3",
    ),
    # a check of the harness itself (seconds per workload): the numbers mean nothing
    "tiny": dict(
        reps=1, stack_files=300, bigdir=300, bigfile=8 * MiB, copyup=4 * MiB,
        untar=50, fio_time=1, fio_reps=1, fio_region=8 * MiB, py="few", git_files=50,
        scale_layers=[1, 10], scale_files=50, rss_files=200, timeout=120,
        fio_wsize=8 * MiB, c_files=6, ctr_files=50, par_files=50, par_untar=20,
        par_fio_time=1, par_reps=1, apt_reps=1, apt_pkg="media-types",
    ),
}

# The offline package install: a Debian minbase (debootstrap, cached under --cache) and a layer
# of apt lists and .debs; what is installed (per mode above) and how the result is checked
# inside the merged tree afterwards (it must print 1).
APT_SUITE = "bookworm"
APT_CHECK = {"python3": "python3 -c 'print(1)'", "media-types": "test -s /etc/mime.types && echo 1"}
CTR_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Targets (docs/performance.md, Targets): median ratio to kernel overlayfs. (passthrough, no passthrough)
TARGETS = {
    "find-5L-warm": (1.2, 1.2), "find-5L-cold": (1.5, 1.5),
    "find-20L-warm": (1.2, 1.2), "find-20L-cold": (1.5, 1.5),
    "ls-l-warm": (1.0, 1.0), "ls-l-cold": (1.3, 1.3),
    "seqread-cold": (1.1, 1.5), "seqread-warm": (1.1, 1.5), "seqwrite-fsync": (1.1, 1.5),
    "fio-randread": (1.1, 1.5), "fio-randwrite": (1.2, 1.2),
    "copyup": (1.0, 1.0), "untar": (1.3, 1.3), "rm-rf": (1.3, 1.3),
    "compileall": (1.2, 1.2), "git-status-2nd": (1.2, 1.2), "git-status-3rd": (1.2, 1.2),
}

LOG_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - LOG_T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# an opaque directory as each reader in each pass looks for it
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")
# ctr-start: the image's ids 0..N-1 shown as SHIFT.. (the container's range)
CTR_SHIFT, CTR_IDS = 10000, 50000


class BenchError(Exception):
    pass


def sh(cmd, *, timeout=None, cwd=None, check=True, capture=False, stdout=None, env=None):
    """Run a command; on failure raise BenchError with its stderr."""
    try:
        p = subprocess.run(
            cmd, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL, env=env,
            stdout=subprocess.PIPE if capture else (stdout or subprocess.DEVNULL),
            stderr=subprocess.PIPE, text=True,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timeout after {timeout}s: {' '.join(map(str, cmd))}") from e
    if check and p.returncode != 0:
        raise BenchError(
            f"exit {p.returncode}: {' '.join(map(str, cmd))}: {(p.stderr or '').strip()[-400:]}")
    return p


def timed(cmd, *, timeout, cwd=None) -> float:
    t0 = time.perf_counter()
    sh(cmd, timeout=timeout, cwd=cwd)
    return time.perf_counter() - t0


def cpu_steal() -> tuple[int, int]:
    """The machine's CPU time stolen by the hypervisor, and all of its CPU time, in ticks
    (/proc/stat's first line). A FUSE system pays for a stolen vCPU at every round trip."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return fields[7], sum(fields)


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


def drop_caches(level: int = 3) -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(str(level))


def mountinfo(path: str = "/proc/self/mountinfo"):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out.append(dict(dev=parts[2], mnt=parts[4].replace("\\040", " "), fstype=parts[sep + 1]))
    return out


def is_mounted(path: str, mi: str = "/proc/self/mountinfo") -> bool:
    """False too when the namespace of `mi` is gone (its mounts went with it)."""
    try:
        return any(m["mnt"] == path for m in mountinfo(mi))
    except FileNotFoundError:
        return False


def fuse_abort(path: str, mi: str = "/proc/self/mountinfo") -> None:
    for m in mountinfo(mi):
        if m["mnt"] == path and m["fstype"].startswith("fuse"):
            minor = m["dev"].split(":")[1]
            try:
                with open(f"/sys/fs/fuse/connections/{minor}/abort", "w") as f:
                    f.write("1")
            except OSError:
                pass


def daemon_pids(mnt: str) -> list[int]:
    """FUSE daemons whose command line names this mountpoint."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if not args or not args[0]:
            continue
        exe = os.path.basename(args[0]).decode(errors="replace")
        if exe in ("unionfuse", "fuse-overlayfs") and mnt.encode() in args:
            pids.append(int(d))
    return pids


def pid_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (an exited daemon is reparented
    and may stay a zombie for a while)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def proc_status(pid: int) -> dict:
    info = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                info[k] = int(v.split()[0])
    info["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return info


# ---------------------------------------------------------------- where commands run
# The root pass runs everything here. The rootless pass runs mounts and workloads in a user +
# mount namespace (benches/nshelper.py); the driver stays root outside it, drops the caches and
# times every request from here.

class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class LocalCtx:
    """Commands run by the driver itself, as root."""
    rootless = False
    label = "root"
    mountinfo_path = "/proc/self/mountinfo"

    def sh(self, cmd, *, timeout=None, cwd=None, check=True, capture=False, log=None):
        if log is None:
            return sh(cmd, timeout=timeout, cwd=cwd, check=check, capture=capture)
        # a mount: the daemon inherits stdout/stderr, a file, never a pipe we would wait on
        with open(log, "w") as logf:
            try:
                p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf,
                                   stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise BenchError(f"timeout after {timeout}s: {' '.join(map(str, cmd))}") from e
        return Result(p.returncode, "", "")

    def timed(self, cmd, *, timeout, cwd=None) -> float:
        return timed(cmd, timeout=timeout, cwd=cwd)

    def timed_all(self, cmds, *, timeout) -> float:
        """Start every command at once; seconds until the last one exits."""
        t0 = time.perf_counter()
        procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for c in cmds]
        errs = []
        for c, p in zip(cmds, procs):
            try:
                _, e = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                errs.append(f"timeout after {timeout}s: {' '.join(map(str, c))}")
                continue
            if p.returncode != 0:
                errs.append(f"exit {p.returncode}: {' '.join(map(str, c))}: {e.strip()[-300:]}")
        t = time.perf_counter() - t0
        if errs:
            raise BenchError("; ".join(errs))
        return t

    def close(self) -> None:
        pass


class NsCtx:
    """Commands run in a user + mount namespace owned by an ordinary user, mapped like
    rootless podman: 0 = the user, 1..N = its subordinate range (newuidmap/newgidmap)."""
    rootless = True
    label = "rootless"

    def __init__(self, user: "BenchUser", helper: str, env: dict, cwd: str):
        self.user = user
        asuser = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"]
        self.p = subprocess.Popen(asuser + ["/usr/bin/python3", helper], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
        try:
            hello = self._read()
            if "pid" not in hello:
                raise BenchError(f"namespace helper: {hello.get('error', hello)}")
            self.pid = hello["pid"]
            for tool, start, count in (("newuidmap", user.subuid, user.subuid_n),
                                       ("newgidmap", user.subgid, user.subgid_n)):
                own = user.uid if tool == "newuidmap" else user.gid
                sh(asuser + [tool, str(self.pid), "0", str(own), "1", "1", str(start), str(count)],
                   timeout=30)
            self.p.stdin.write("mapped\n")
            self.p.stdin.flush()
            ready = self._read()
            if not ready.get("ready") or ready.get("uid") != 0:
                raise BenchError(f"namespace helper: {ready.get('error', ready)}")
        except Exception:
            self.close()
            raise
        self.mountinfo_path = f"/proc/{self.pid}/mountinfo"
        with open(f"/proc/{self.pid}/uid_map") as f:
            self.uid_map = " / ".join(" ".join(ln.split()) for ln in f)

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise BenchError("namespace helper exited")
        return json.loads(line)

    def request(self, cmds, *, timeout, capture=False, cwd=None, log=None) -> tuple[dict, float]:
        req = dict(cmds=[list(map(str, c)) for c in cmds], timeout=timeout, capture=capture,
                   cwd=cwd, log=log)
        line = json.dumps(req) + "\n"
        t0 = time.perf_counter()
        self.p.stdin.write(line)
        self.p.stdin.flush()
        res = self._read()
        t = time.perf_counter() - t0
        return res, t

    @staticmethod
    def _errors(cmds, res, timeout) -> list[str]:
        if res.get("timeout"):
            return [f"timeout after {timeout}s: {' '.join(map(str, cmds[0]))}"]
        return [f"exit {rc}: {' '.join(map(str, c))}: {e.strip()[-300:]}"
                for c, rc, e in zip(cmds, res["rc"], res["err"]) if rc != 0]

    def sh(self, cmd, *, timeout=None, cwd=None, check=True, capture=False, log=None):
        res, _ = self.request([cmd], timeout=timeout, capture=capture, cwd=cwd, log=log)
        errs = self._errors([cmd], res, timeout)
        if res.get("timeout") or (check and errs):
            raise BenchError("; ".join(errs) + " (in the user namespace)")
        return Result(res["rc"][0], res["out"][0], res["err"][0])

    def timed(self, cmd, *, timeout, cwd=None) -> float:
        return self.timed_all([cmd], timeout=timeout, cwd=cwd)

    def timed_all(self, cmds, *, timeout, cwd=None) -> float:
        res, t = self.request(cmds, timeout=timeout, cwd=cwd)
        errs = self._errors(cmds, res, timeout)
        if errs:
            raise BenchError("; ".join(errs) + " (in the user namespace)")
        return t

    def close(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.stdin.write(json.dumps(dict(exit=True)) + "\n")
                self.p.stdin.flush()
                self.p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()


@dataclass
class BenchUser:
    name: str
    uid: int
    gid: int
    subuid: int
    subuid_n: int
    subgid: int
    subgid_n: int

    @staticmethod
    def lookup(name: str) -> "BenchUser":
        import pwd
        pw = pwd.getpwnam(name)

        def sub(file: str) -> tuple[int, int]:
            with open(file) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[0] in (name, str(pw.pw_uid)):
                        return int(parts[1]), int(parts[2])
            raise BenchError(f"{name} has no range in {file}")

        (su, sun), (sg, sgn) = sub("/etc/subuid"), sub("/etc/subgid")
        return BenchUser(name, pw.pw_uid, pw.pw_gid, su, sun, sg, sgn)


# ---------------------------------------------------------------- systems

@dataclass
class System:
    name: str
    kind: str  # ext4 | overlay | fuse-overlayfs | unionfuse
    label: str
    binary: str = ""
    opts: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def fuse(self) -> bool:
        return self.kind in ("fuse-overlayfs", "unionfuse")


@dataclass
class Mount:
    system: System
    path: str  # what the workload uses
    root: str  # per-mount scratch dir (removed afterwards)
    mounted: bool
    lowers: list[str]
    ctx: object = None
    more: dict = field(default_factory=dict)  # further results of the same run (e.g. rm-rf)


class Harness:
    def __init__(self, args):
        self.args = args
        self.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
        self.p = MODES[self.mode]
        self.tmp = os.path.abspath(args.tmp)
        self.data = os.path.join(self.tmp, "d")
        self.mroot = os.path.join(self.tmp, "m")
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(self.mroot, exist_ok=True)
        self.counter = 0
        self.live: list[Mount] = []
        self.stacks: dict[str, dict] = {}
        self.systems: list[System] = []
        self.notes: list[str] = []
        self.odd: list[str] = []  # errors/crashes/hangs seen in unionfuse
        self.timeout = self.p["timeout"]
        # the system python: the same interpreter inside the user namespace, where root's
        # home (pyenv shims) is out of reach
        self.py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else \
            (shutil.which("python3") or sys.executable)
        self.ctx = LocalCtx()
        self.rl_systems: list[System] = []  # the rootless pass's systems
        self.user: BenchUser | None = None
        if args.bench_user and "rootless" in args.passes.split(","):
            self.user = BenchUser.lookup(args.bench_user)
            os.chmod(self.tmp, 0o755)  # the user must reach the layers and mounts
            os.chmod(self.data, 0o755)
            os.chmod(self.mroot, 0o755)

    # ------------------------------------------------------------ mounts
    def mount(self, sysm: System, stack: str, ext4: str = "flat", opts=()) -> Mount:
        st = self.stacks[stack]
        ctx = self.ctx
        self.counter += 1
        root = os.path.join(self.mroot, f"{self.counter}-{sysm.name}{'-rl' if ctx.rootless else ''}")
        os.makedirs(root)
        if sysm.kind == "ext4":
            if ext4 == "flat":
                path = st["flat"]
            elif ext4 == "empty":
                path = os.path.join(root, "dir")
                os.makedirs(path)
            elif ext4 == "copy":
                path = os.path.join(root, "dir")
                sh(["cp", "-a", st["flat"], path], timeout=self.timeout)
            else:
                raise ValueError(ext4)
            return Mount(sysm, path, root, False, st["lowers"], ctx)
        upper, work, mnt = (os.path.join(root, x) for x in ("upper", "work", "mnt"))
        for d in (upper, work, mnt):
            os.makedirs(d)
        logpath = os.path.join(root, "mount.log")
        open(logpath, "w").close()
        if ctx.rootless:  # the namespace's root (the bench user) owns them
            for d in (root, upper, work, mnt, logpath):
                os.chown(d, self.user.uid, self.user.gid)
        lowers = st["lowers"]
        cwd = None
        if sysm.kind == "overlay":
            lowerspec = ":".join(lowers)
            if st.get("relative"):
                # lowerdir= must fit in one page: mount from the layers' parent.
                cwd = st["base"]
                lowerspec = ":".join(os.path.relpath(x, cwd) for x in lowers)
            ovopts = f"lowerdir={lowerspec},upperdir={upper},workdir={work}"
            cmd = ["mount", "-t", "overlay", "ufbench", "-o",
                   ovopts + (",userxattr" if ctx.rootless else ""), mnt]
        elif sysm.kind == "fuse-overlayfs":
            cmd = [sysm.binary, "-o", ",".join([f"lowerdir={':'.join(lowers)},upperdir={upper},"
                                                f"workdir={work}"] + list(opts)), mnt]
        else:
            cmd = [sysm.binary, "mount", ":".join(lowers), upper, mnt, "--workdir", work]
            for o in list(sysm.opts) + list(opts):
                cmd += ["-o", o]
        m = Mount(sysm, mnt, root, True, lowers, ctx)
        self.live.append(m)
        try:
            p = ctx.sh(cmd, cwd=cwd, timeout=60, check=False, log=logpath)
            if p.returncode != 0:
                with open(logpath) as f:
                    raise BenchError(f"exit {p.returncode}: {' '.join(cmd)}: {f.read()[-400:]}")
            deadline = time.monotonic() + 20
            while not is_mounted(mnt, ctx.mountinfo_path):
                if time.monotonic() > deadline:
                    raise BenchError(f"{sysm.name}: not mounted after 20s: {' '.join(cmd)}")
                time.sleep(0.02)
        except Exception:
            self.unmount(m)
            raise
        return m

    def prepare(self, sysm: System, stack: str) -> Mount:
        """A mount's directories (upper, work) for a workload whose command mounts the union
        itself (`unionfuse run`); nothing is mounted here."""
        self.counter += 1
        root = os.path.join(self.mroot, f"{self.counter}-{sysm.name}{'-rl' if self.ctx.rootless else ''}")
        for d in (root, os.path.join(root, "upper"), os.path.join(root, "work")):
            os.makedirs(d)
            if self.ctx.rootless:
                os.chown(d, self.user.uid, self.user.gid)
        return Mount(sysm, "", root, False, self.stacks[stack]["lowers"], self.ctx)

    def unmount(self, m: Mount) -> None:
        ctx = m.ctx or LocalCtx()
        mi = ctx.mountinfo_path
        if m.mounted:
            pids = daemon_pids(m.path) if m.system.fuse else []
            if is_mounted(m.path, mi):
                try:
                    ctx.sh(["umount", m.path], timeout=30)
                except (BenchError, OSError) as e:
                    self.note_odd(m.system, f"umount failed ({e}); aborting the connection")
                    fuse_abort(m.path, mi)
                    try:
                        ctx.sh(["umount", "-l", m.path], timeout=30, check=False)
                    except (BenchError, OSError):
                        pass
            deadline = time.monotonic() + 10
            for pid in pids:
                while pid_running(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if pid_running(pid):
                    self.note_odd(m.system, f"daemon {pid} still alive 10s after umount; killed")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            m.mounted = False
        if m in self.live:
            self.live.remove(m)
        if not is_mounted(m.path, mi):
            shutil.rmtree(m.root, ignore_errors=True)

    def unmount_all(self) -> None:
        for m in list(self.live):
            try:
                self.unmount(m)
            except Exception as e:  # best effort: run.sh's trap finishes the job
                log(f"cleanup: {m.path}: {e}")

    def note_odd(self, sysm: System, msg: str) -> None:
        line = f"{sysm.name}: {msg}"
        log("ODD " + line)
        if sysm.kind == "unionfuse" or "umount" in msg or "daemon" in msg:
            self.odd.append(line)

    # ------------------------------------------------------------ systems
    def detect_systems(self) -> None:
        a = self.args
        self.systems.append(System("ext4", "ext4", "ext4 (no union)"))
        self.systems.append(System("overlay", "overlay", "kernel overlayfs"))
        fo1 = shutil.which("fuse-overlayfs", path="/usr/bin:/usr/local/bin")
        if fo1:
            v = sh([fo1, "--version"], capture=True, check=False)
            ver = next((ln.split("version")[-1].strip() for ln in (v.stdout + v.stderr).splitlines()
                        if ln.startswith("fuse-overlayfs")), "")
            self.systems.append(System("fo1", "fuse-overlayfs", f"fuse-overlayfs {ver or '?'}", fo1))
        else:
            self.notes.append("fuse-overlayfs 1.10 (Debian) not installed: skipped")
        if a.fo2 and os.access(a.fo2, os.X_OK):
            self.systems.append(System("fo2", "fuse-overlayfs", "fuse-overlayfs 2.0", a.fo2))
        else:
            self.notes.append(f"fuse-overlayfs 2.0 not found at {a.fo2!r}: skipped")
        if not os.access(a.bin, os.X_OK):
            raise SystemExit(f"unionfuse binary {a.bin} missing")
        self.systems.append(System("uf", "unionfuse", "unionfuse (root, default)", a.bin))
        # Probe -o nopassthrough once on a scratch stack.
        probe = os.path.join(self.data, "probe")
        os.makedirs(os.path.join(probe, "L0"), exist_ok=True)
        self.stacks["probe"] = dict(lowers=[os.path.join(probe, "L0")], flat=os.path.join(probe, "L0"))
        nopt = System("ufnp", "unionfuse", "unionfuse -o nopassthrough", a.bin, ["nopassthrough"])
        try:
            self.unmount(self.mount(nopt, "probe"))
        except BenchError as e:
            nopt.opts = []
            nopt.label = "unionfuse (nopassthrough rejected)"
            nopt.note = f"-o nopassthrough rejected by the binary, run without it: {e}"
            self.notes.append(nopt.note)
        self.systems.append(nopt)
        if self.user:
            self.detect_rootless_systems()
        if a.systems:
            keep = set(a.systems.split(","))
            self.systems = [s for s in self.systems if s.name in keep]
            self.rl_systems = [s for s in self.rl_systems if s.name in keep]
        if "root" not in a.passes.split(","):
            self.systems = []
        log("systems: " + ", ".join(f"{s.name}={s.label}" for s in self.systems))
        if self.rl_systems:
            log("rootless systems: " + ", ".join(f"{s.name}={s.label}" for s in self.rl_systems))

    def detect_rootless_systems(self) -> None:
        """The same peers in the user namespace: the binaries copied where the user reaches
        them (root's home is closed to it). unionfuse gets no passthrough there."""
        bindir = os.path.join(self.tmp, "bin")
        home = os.path.join(self.tmp, "home")
        os.makedirs(home, exist_ok=True)
        os.chown(home, self.user.uid, self.user.gid)

        def reachable(src: str, sub: str) -> str:
            d = os.path.join(bindir, sub)
            os.makedirs(d, exist_ok=True)
            os.chmod(bindir, 0o755)
            dst = os.path.join(d, os.path.basename(src))
            shutil.copy2(src, dst)
            os.chmod(d, 0o755)
            os.chmod(dst, 0o755)
            return dst

        by = {s.name: s for s in self.systems}
        out = [System("overlay", "overlay", "kernel overlayfs -o userxattr")]
        for n in ("fo1", "fo2"):
            if n in by:
                b = by[n].binary if n == "fo1" else reachable(by[n].binary, "fo2")
                out.append(System(n, "fuse-overlayfs", by[n].label, b))
        uf = reachable(self.args.bin, "uf")
        out.append(System("uf", "unionfuse", "unionfuse (rootless: no passthrough)", uf))
        # Not a default: the kernel opens files without asking (docs/semantics.md, D18).
        out.append(System("ufno", "unionfuse", "unionfuse -o noopen", uf, ["noopen"]))
        self.rl_systems = out
        self.ns_env = dict(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           HOME=home, LANG="C.UTF-8", TMPDIR=home)

    def enter_namespace(self) -> NsCtx:
        helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nshelper.py")
        dst = os.path.join(self.tmp, "bin", "nshelper.py")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(helper, dst)
        os.chmod(dst, 0o755)
        return NsCtx(self.user, dst, self.ns_env, self.tmp)

    # ------------------------------------------------------------ data
    def build_data(self, wanted: set[str]) -> None:
        p = self.p
        rng = random.Random(8)
        t0 = time.monotonic()
        if wanted & {"find"}:
            self.build_rootfs("root5", 5, p["stack_files"], rng)
            self.build_rootfs("root20", 20, p["stack_files"], rng)
        if "ls" in wanted:
            self.build_bigdir(p["bigdir"], rng)
        if wanted & {"seq", "copyup", "untar", "fio"}:
            self.build_datafiles()
        if "untar" in wanted:
            self.build_tarball(p["untar"], rng)
        if "compileall" in wanted:
            self.build_py()
        if "git" in wanted:
            self.build_git(p["git_files"], rng)
        if "scale" in wanted:
            for n in p["scale_layers"]:
                self.build_scale(n, p["scale_files"])
        if "rss" in wanted:
            self.build_rss(p["rss_files"])
        if "par" in wanted:
            self.build_par(p["par_files"], p["par_untar"], rng)
        if "compile" in wanted:
            self.build_cproj(p["c_files"], rng)
        if self.user:  # rootless images belong to the user (its namespace's root)
            sh(["chown", "-R", "-h", f"{self.user.uid}:{self.user.gid}", self.data], timeout=600)
        if "ctr" in wanted:
            self.build_images(p["ctr_files"], rng)
        if "apt" in wanted:
            self.build_apt()
        os.sync()
        log(f"data built in {time.monotonic() - t0:.1f}s")

    def layer_dirs(self, name: str, n: int) -> list[str]:
        base = os.path.join(self.data, name)
        lowers = [os.path.join(base, str(i)) for i in range(n)]  # top-first
        for d in lowers:
            os.makedirs(d, exist_ok=True)
        return lowers

    def flatten(self, name: str, lowers: list[str]) -> str:
        """The merged view as a plain ext4 tree, made by kernel overlayfs."""
        flat = os.path.join(self.data, name + ".flat")
        if len(lowers) == 1:
            return lowers[0]
        mnt = os.path.join(self.data, name + ".mnt")
        os.makedirs(mnt)
        sh(["mount", "-t", "overlay", "ufbench", "-o", f"ro,lowerdir={':'.join(lowers)}", mnt],
           timeout=60)
        try:
            sh(["cp", "-a", mnt + "/.", flat + "/"] if os.path.isdir(flat) else ["cp", "-a", mnt, flat],
               timeout=600)
        finally:
            sh(["umount", mnt], timeout=60)
            os.rmdir(mnt)
        return flat

    def build_rootfs(self, name: str, nlayers: int, nfiles: int, rng: random.Random) -> None:
        """Rootfs-like stack: a base layer with half the files, upper layers that add files,
        overwrite names of lower layers, delete some (whiteouts) and replace a directory
        (opaque)."""
        lowers = self.layer_dirs(name, nlayers)
        tops = ["usr/bin", "usr/lib", "usr/share/doc", "usr/include", "etc", "var/lib",
                "opt/app", "lib/modules"]
        ndirs = max(len(tops), nfiles // 25)
        pool = list(tops)
        while len(pool) < ndirs:
            parent = rng.choice(pool)
            if parent.count("/") < 5:
                pool.append(f"{parent}/d{len(pool)}")
        sizes = [0, 16, 100, 300, 1000, 2500, 4096]
        union: list[str] = []
        base_n = nfiles // 2 if nlayers > 1 else nfiles
        per_upper = (nfiles - base_n) // max(1, nlayers - 1)
        serial = 0

        def write(layer: str, rel: str) -> None:
            full = os.path.join(layer, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(b"x" * rng.choice(sizes))

        for k in range(nlayers):  # bottom first
            layer = lowers[nlayers - 1 - k]
            if k == 0:
                for d in pool:
                    os.makedirs(os.path.join(layer, d), exist_ok=True)
                for _ in range(base_n):
                    serial += 1
                    rel = f"{rng.choice(pool)}/f{serial}"
                    write(layer, rel)
                    union.append(rel)
                continue
            # an opaque directory: replaces a lower directory's content
            od = rng.choice(pool[len(tops):] or pool)
            os.makedirs(os.path.join(layer, od), exist_ok=True)
            for xa in OPAQUE_XATTRS:  # root, userxattr and fuse-overlayfs's rootless name
                os.setxattr(os.path.join(layer, od), xa, b"y")
            for j in range(5):
                write(layer, f"{od}/opq{k}_{j}")
            union = [u for u in union if not u.startswith(od + "/")]
            born_here: set[str] = set()  # names only this layer has: deleting one leaves no whiteout
            for _ in range(per_upper):
                r = rng.random()
                if r < 0.25 and union:  # overwrite a lower name
                    write(layer, rng.choice(union))
                elif r < 0.30 and union:  # whiteout
                    i = rng.randrange(len(union))
                    rel = union[i]
                    union[i] = union[-1]
                    union.pop()
                    full = os.path.join(layer, rel)
                    if rel in born_here:
                        # a whiteout hiding nothing would show in an opaque directory's
                        # listing (kernel overlay lists it, lookup says ENOENT)
                        os.unlink(full)
                        continue
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    if os.path.lexists(full):
                        os.unlink(full)
                    os.mknod(full, stat.S_IFCHR | 0o600, os.makedev(0, 0))
                else:
                    serial += 1
                    rel = f"{rng.choice(pool)}/f{serial}"
                    write(layer, rel)
                    union.append(rel)
                    born_here.add(rel)
        flat = self.flatten(name, lowers)
        nflat = sum(len(f) for _, _, f in os.walk(flat))
        self.stacks[name] = dict(lowers=lowers, flat=flat, files=nflat)
        log(f"stack {name}: {nlayers} layers, {nflat} files in the merged view")

    def build_bigdir(self, n: int, rng: random.Random) -> None:
        lowers = self.layer_dirs("bigdir", 3)
        # bottom: 50%, middle: 30% new + overwrites, top: 20% new + overwrites + whiteouts
        split = [int(n * 0.5), int(n * 0.3), n - int(n * 0.5) - int(n * 0.3)]
        names: list[str] = []
        serial = 0
        for k, cnt in enumerate(split):
            layer = os.path.join(lowers[2 - k], "big")
            os.makedirs(layer)
            for _ in range(cnt):
                serial += 1
                names.append(f"entry-{serial:06d}")
                with open(os.path.join(layer, names[-1]), "wb") as f:
                    f.write(b"y" * 64)
            if k > 0:
                for nm in rng.sample(names[: len(names) - cnt], min(500, len(names) - cnt)):
                    with open(os.path.join(layer, nm), "wb") as f:
                        f.write(b"z" * 32)
        for nm in rng.sample(names[: split[0]], 50):  # whiteouts in the top layer
            p = os.path.join(lowers[0], "big", nm)
            if os.path.lexists(p):
                os.unlink(p)
            os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        flat = self.flatten("bigdir", lowers)
        cnt = len(os.listdir(os.path.join(flat, "big")))
        self.stacks["bigdir"] = dict(lowers=lowers, flat=flat, files=cnt)
        log(f"bigdir: {cnt} merged entries from 3 layers")

    def build_datafiles(self) -> None:
        (lower,) = self.layer_dirs("data", 1)
        buf = os.urandom(MiB)
        for name, size in (("big.bin", self.p["bigfile"]), ("cu.bin", self.p["copyup"])):
            with open(os.path.join(lower, name), "wb") as f:
                for _ in range(size // MiB):
                    f.write(buf)
                os.fsync(f.fileno())
        self.stacks["data"] = dict(lowers=[lower], flat=lower)

    def build_tarball(self, n: int, rng: random.Random) -> None:
        path = os.path.join(self.data, "untar.tar")
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
            ndirs = max(1, n // 50)
            for d in range(ndirs):
                ti = tarfile.TarInfo(f"t/d{d // 20}/d{d}")
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            for i in range(n):
                data = b"t" * rng.choice([0, 50, 200, 1000, 3000, 8000])
                ti = tarfile.TarInfo(f"t/d{(i % ndirs) // 20}/d{i % ndirs}/f{i}")
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
                tf.addfile(ti, io.BytesIO(data))
        self.tarball = path
        log(f"tarball: {n} files")

    def build_py(self) -> None:
        (lower,) = self.layer_dirs("py", 1)
        src = "/usr/lib/python3.11"
        if not os.path.isdir(src):
            src = os.path.dirname(os.__file__)
        dst = os.path.join(lower, "py")
        if self.p["py"] == "all":
            shutil.copytree(src, dst, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "site-packages",
                                                          "dist-packages", "*.pyc"))
        else:  # quick: the top-level modules only (tiny: ten of them)
            os.makedirs(dst)
            for f in sorted(os.listdir(src))[:10 if self.p["py"] == "few" else None]:
                if f.endswith(".py") and os.path.isfile(os.path.join(src, f)):
                    shutil.copy2(os.path.join(src, f), dst)
        # drop what doesn't compile (py2 test data), so a failure at run time is real
        scratch = os.path.join(self.data, "pyscratch")
        shutil.copytree(dst, scratch, symlinks=True)
        out = sh([self.py, "-m", "compileall", "-q", scratch], check=False, capture=True,
                 timeout=600).stdout
        for line in out.splitlines():
            if line.startswith("*** Error compiling '"):
                bad = line.split("'")[1]
                rel = os.path.relpath(bad, scratch)
                if os.path.exists(os.path.join(dst, rel)):
                    os.unlink(os.path.join(dst, rel))
        shutil.rmtree(scratch)
        n = sum(1 for _, _, fs in os.walk(dst) for f in fs if f.endswith(".py"))
        self.stacks["py"] = dict(lowers=[lower], flat=lower, files=n)
        log(f"compileall tree: {n} .py files from {src}")

    def build_git(self, n: int, rng: random.Random) -> None:
        (lower,) = self.layer_dirs("git", 1)
        repo = os.path.join(lower, "repo")
        os.makedirs(repo)
        for i in range(n):
            d = os.path.join(repo, f"m{i % 50}", f"s{i % 7}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"file{i}.rs"), "w") as f:
                f.write(f"// file {i}\n" + "fn f() {}\n" * rng.randrange(1, 40))
        g = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        sh(g[:3] + ["init", "-q"], timeout=60)
        sh(g + ["add", "-A"], timeout=300)
        sh(g + ["commit", "-qm", "bench"], timeout=300)
        self.stacks["git"] = dict(lowers=[lower], flat=lower, files=n)
        log(f"git repo: {n} files")

    def build_scale(self, n: int, nfiles: int) -> None:
        name = f"scale{n}"
        base = os.path.join(self.data, name)
        lowers = self.layer_dirs(name, n)
        for k, layer in enumerate(lowers):  # every layer holds the directories
            d = os.path.join(layer, "a", "b", "c")
            os.makedirs(d)
            open(os.path.join(d, f"layer{k}"), "wb").close()
        bottom = os.path.join(lowers[-1], "a", "b", "c")
        for i in range(nfiles):  # the files only in the bottom layer: worst-case lookups
            open(os.path.join(bottom, f"f{i}"), "wb").close()
        self.stacks[name] = dict(lowers=lowers, flat=lowers[-1], relative=True, base=base)

    def build_par(self, nfiles: int, ntar: int, rng: random.Random) -> None:
        """Four subtrees of nfiles each (one per parallel client) and a small tarball."""
        (lower,) = self.layer_dirs("par", 1)
        sizes = [0, 100, 1000, 4096]
        for c in range(4):
            for i in range(nfiles):
                d = os.path.join(lower, f"c{c}", f"d{i % 40}", f"e{i % 7}")
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, f"f{i}"), "wb") as f:
                    f.write(b"p" * rng.choice(sizes))
        self.stacks["par"] = dict(lowers=[lower], flat=lower, files=4 * nfiles)
        path = os.path.join(self.data, "par.tar")
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
            for i in range(ntar):
                data = b"t" * rng.choice([0, 50, 200, 1000, 3000, 8000])
                ti = tarfile.TarInfo(f"t/d{i % 10}/f{i}")
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
                tf.addfile(ti, io.BytesIO(data))
        os.chmod(path, 0o644)
        self.par_tarball = path
        log(f"parallel: 4 subtrees of {nfiles} files, tarball of {ntar} files")

    def build_cproj(self, n: int, rng: random.Random) -> None:
        """A small C project: n .c files, a few shared headers, make -j2 builds it in place."""
        (lower,) = self.layer_dirs("cproj", 1)
        proj = os.path.join(lower, "proj")
        os.makedirs(os.path.join(proj, "include"))
        for k in range(8):
            with open(os.path.join(proj, "include", f"h{k}.h"), "w") as f:
                f.write(f"#pragma once\n#include <stdio.h>\n#include <string.h>\n"
                        f"struct s{k} {{ int a; char b[{16 + k}]; }};\n"
                        f"static inline int h{k}(int x) {{ return x * {k + 3} + 1; }}\n")
        srcs = []
        for i in range(n):
            sub = os.path.join(proj, f"m{i % 10}")
            os.makedirs(sub, exist_ok=True)
            name = f"m{i % 10}/u{i}.c"
            incs = "".join(f'#include "h{k}.h"\n' for k in rng.sample(range(8), 3))
            body = "".join(f"int u{i}_{j}(int x) {{ struct s0 v; memset(&v, 0, sizeof v); "
                           f"v.a = h0(x + {j}); return v.a ^ {j}; }}\n"
                           for j in range(rng.randrange(3, 12)))
            with open(os.path.join(proj, name), "w") as f:
                f.write(incs + "#include \"h0.h\"\n" + body)
            srcs.append(name)
        with open(os.path.join(proj, "main.c"), "w") as f:
            f.write("int u0_0(int);\nint main(void) { return u0_0(1) == 0; }\n")
        with open(os.path.join(proj, "Makefile"), "w") as f:
            f.write("SRCS := main.c " + " ".join(srcs) + "\nOBJS := $(SRCS:.c=.o)\n"
                    "CFLAGS := -O1 -Iinclude\n\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n"
                    "%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n")
        self.stacks["cproj"] = dict(lowers=[lower], flat=lower, files=n)
        log(f"C project: {n} files")

    def build_images(self, n: int, rng: random.Random) -> None:
        """A rootfs-like image whose files belong to ids 0, 1 and 100 of whoever extracted it:
        root's (the root pass) and the namespace's (the user and its range: rootless)."""
        sizes = [0, 64, 300, 1000, 4096, 16384]
        owners = [0] * 8 + [1, 100]
        for name, owned in (("img-root", None), ("img-ns", self.user)):
            if name == "img-root" and "root" not in self.args.passes.split(","):
                continue
            if name == "img-ns" and not self.user:
                continue
            (lower,) = self.layer_dirs(name, 1)
            r = random.Random(5)
            host = (lambda i: i) if owned is None else \
                (lambda i: owned.uid if i == 0 else owned.subuid + i - 1)
            hostg = (lambda i: i) if owned is None else \
                (lambda i: owned.gid if i == 0 else owned.subgid + i - 1)
            for i in range(n):
                d = os.path.join(lower, f"usr/lib/p{i % 60}", f"s{i % 5}")
                if not os.path.isdir(d):
                    os.makedirs(d)
                full = os.path.join(d, f"f{i}")
                with open(full, "wb") as f:
                    f.write(b"i" * r.choice(sizes))
                o = r.choice(owners)
                os.lchown(full, host(o), hostg(o))
            for dp, dns, _ in os.walk(lower):
                for dn in dns:
                    os.lchown(os.path.join(dp, dn), host(0), hostg(0))
            os.lchown(lower, host(0), hostg(0))
            self.stacks[name] = dict(lowers=[lower], flat=lower, files=n)
        log(f"container images: {n} files owned by ids 0, 1, 100")

    def apt_cache(self) -> str | None:
        """The Debian minbase and the layer of apt lists and .debs, built once under --cache:
        debootstrap --variant=minbase, then in a chroot of a copy `apt-get update` and
        `apt-get install --download-only python3`. None (and a note) when it can't be built."""
        base = os.path.join(self.args.cache, f"apt-{APT_SUITE}")
        if os.path.isfile(os.path.join(base, "ok")):
            return base
        if self.mode == "tiny":
            self.notes.append(f"offline package install skipped in --tiny: no Debian layers in "
                              f"{base} yet (any other mode builds them, once)")
            log(self.notes[-1])
            return None
        mirror = os.environ.get("UFBENCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        part = base + ".part"
        minbase, work, debs = (os.path.join(part, x) for x in ("minbase", "work", "debs"))
        try:
            if not shutil.which("debootstrap"):
                raise BenchError("debootstrap is not installed")
            os.makedirs(part, exist_ok=True)
            if not os.path.isfile(minbase + ".ok"):
                shutil.rmtree(minbase, ignore_errors=True)
                logf = os.path.join(part, "debootstrap.log")
                log(f"debootstrap --variant=minbase {APT_SUITE} from {mirror} into {minbase} "
                    f"(once; log in {logf})")
                with open(logf, "w") as f:
                    p = sh(["debootstrap", "--variant=minbase", APT_SUITE, minbase, mirror],
                           timeout=1800, stdout=f, check=False)
                if p.returncode != 0:
                    with open(logf) as f:
                        last = [ln.strip() for ln in f if ln.strip()][-1:]
                    raise BenchError(f"debootstrap exited {p.returncode}: "
                                     f"{' '.join(last) or p.stderr.strip()[-300:]} (log: {logf})")
                open(minbase + ".ok", "w").close()
            # the image ships neither lists nor .debs, as distribution images don't
            for d, keep in (("var/cache/apt/archives", ".deb"), ("var/lib/apt/lists", "")):
                for e in os.scandir(os.path.join(minbase, d)):
                    if e.is_file(follow_symlinks=False) and e.name.endswith(keep) \
                            and e.name != "lock":
                        os.unlink(e.path)
            for f in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
                if os.path.lexists(os.path.join(minbase, f)):
                    os.unlink(os.path.join(minbase, f))
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(debs, ignore_errors=True)
            sh(["cp", "-a", minbase, work], timeout=600)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=CTR_PATH)
            log("apt-get update + install --download-only python3 in a chroot of a copy")
            sh(["chroot", work, "apt-get", "-q", "-o", "Acquire::Languages=none", "update"],
               timeout=900, env=env)
            sh(["chroot", work, "apt-get", "-q", "-y", "--download-only", "install", "python3"],
               timeout=900, env=env)
            # the second layer: only what that added under the lists and the archives
            os.makedirs(debs)
            tar = subprocess.Popen(["tar", "-C", work, "--exclude=lock", "--exclude=partial",
                                    "-cf", "-", "var/lib/apt/lists", "var/cache/apt/archives"],
                                   stdout=subprocess.PIPE)
            untar = subprocess.run(["tar", "-C", debs, "-xpf", "-"], stdin=tar.stdout)
            tar.stdout.close()
            if tar.wait() != 0 or untar.returncode != 0:
                raise BenchError("tar of the lists and archives failed")
            shutil.rmtree(work)
            ndebs = len([x for x in os.listdir(os.path.join(debs, "var/cache/apt/archives"))
                         if x.endswith(".deb")])
            if not ndebs:
                raise BenchError("apt-get install --download-only python3 left no .deb")
            os.rename(part, base)
            open(os.path.join(base, "ok"), "w").close()
            log(f"apt layers cached in {base}: minbase + {ndebs} .debs and the lists")
            return base
        except (BenchError, OSError) as e:
            self.notes.append(f"offline package install skipped: the Debian {APT_SUITE} layers "
                              f"could not be built ({e}); they need {mirror}")
            log(self.notes[-1])
            return None

    def build_apt(self) -> None:
        """The minbase and the lists + .debs as two lowers (top: the .debs); for the rootless
        pass a copy owned as a rootless image store's is: id 0 = the user, id N = its
        subordinate id N-1."""
        base = self.apt_cache()
        if not base:
            return
        for name, owned in (("apt-root", None), ("apt-ns", self.user)):
            if name == "apt-root" and "root" not in self.args.passes.split(","):
                continue
            if name == "apt-ns" and not self.user:
                continue
            top = os.path.join(self.data, name)
            os.makedirs(top)
            lowers = [os.path.join(top, "debs"), os.path.join(top, "minbase")]
            for src, dst in zip(("debs", "minbase"), lowers):
                sh(["cp", "-a", os.path.join(base, src), dst], timeout=600)
            if owned:
                def shift(i: int, own: int, start: int, n: int) -> int:
                    if i == 0:
                        return own
                    if i - 1 >= n:
                        raise BenchError(f"id {i} in the Debian tree is beyond the user's range")
                    return start + i - 1

                def chown(p: str) -> None:
                    st = os.lstat(p)
                    os.lchown(p, shift(st.st_uid, owned.uid, owned.subuid, owned.subuid_n),
                              shift(st.st_gid, owned.gid, owned.subgid, owned.subgid_n))
                    if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
                        os.chmod(p, stat.S_IMODE(st.st_mode))  # chown cleared setuid/setgid

                for layer in lowers:
                    for dp, dns, fns in os.walk(layer):
                        for x in dns + fns:
                            chown(os.path.join(dp, x))
                    chown(layer)
            self.stacks[name] = dict(lowers=lowers, flat=lowers[-1])
        log(f"apt layers copied from {base}")

    def build_rss(self, n: int) -> None:
        (lower,) = self.layer_dirs("rss", 1)
        for i in range(n):
            d = os.path.join(lower, f"d{i // 1000}")
            if i % 1000 == 0:
                os.makedirs(d)
            open(os.path.join(d, f"f{i}"), "wb").close()
        self.stacks["rss"] = dict(lowers=[lower], flat=lower, files=n)
        log(f"rss tree: {n} files")


# ---------------------------------------------------------------- workloads
# Each returns (seconds, extra) measured on a fresh mount; further results of the same run go
# to m.more. Ratios use seconds (for fio: seconds per operation). Commands go through m.ctx:
# here as root, or in the rootless pass's user namespace (timed from out here).

def warm_or_cold(h: Harness, m: Mount, cmd, cold: bool) -> float:
    if cold:
        drop_caches()
    else:
        m.ctx.sh(cmd, timeout=h.timeout)
    return m.ctx.timed(cmd, timeout=h.timeout)


def wl_find(h: Harness, m: Mount, cold: bool):
    return warm_or_cold(h, m, ["find", m.path, "-printf", "%s %i\n"], cold), {}


def wl_ls(h: Harness, m: Mount, flag: str, cold: bool):
    return warm_or_cold(h, m, ["ls", flag, os.path.join(m.path, "big")], cold), {}


def wl_seqread(h: Harness, m: Mount, cold: bool):
    return warm_or_cold(h, m, ["dd", f"if={m.path}/big.bin", "of=/dev/null", "bs=1M"], cold), {}


def wl_seqwrite(h: Harness, m: Mount):
    n = h.p["bigfile"] // MiB
    t = m.ctx.timed(["dd", "if=/dev/zero", f"of={m.path}/w.bin", "bs=1M", f"count={n}",
                     "conv=fsync"], timeout=h.timeout)
    return t, {}


def count_files(h: Harness, m: Mount, d: str) -> int:
    return len(m.ctx.sh(["find", d, "-type", "f", "-printf", "x"], timeout=h.timeout,
                        capture=True).stdout)


def wl_copyup(h: Harness, m: Mount):
    lower_file = os.path.join(m.lowers[0], "cu.bin")
    sh(["cat", lower_file], timeout=h.timeout)  # source in the page cache for everyone
    os.sync()
    target = os.path.join(m.path, "cu.bin")
    if m.system.kind == "ext4":
        # no union: the least a copy-up must do is copy the file and append, durably
        script = ("import os,shutil,sys,time;t=time.perf_counter();"
                  "shutil.copyfile(sys.argv[1],sys.argv[2]);"
                  "fd=os.open(sys.argv[2],os.O_WRONLY|os.O_APPEND);os.write(fd,b'x');"
                  "os.fsync(fd);os.close(fd);print(time.perf_counter()-t)")
        out = m.ctx.sh([h.py, "-c", script, lower_file, target], timeout=h.timeout, capture=True)
    else:
        script = ("import os,sys,time;t=time.perf_counter();"
                  "fd=os.open(sys.argv[1],os.O_WRONLY|os.O_APPEND);os.write(fd,b'x');"
                  "os.fsync(fd);os.close(fd);print(time.perf_counter()-t)")
        out = m.ctx.sh([h.py, "-c", script, target], timeout=h.timeout, capture=True)
    t = float(out.stdout.strip())
    size = int(m.ctx.sh(["stat", "-c", "%s", target], timeout=h.timeout, capture=True).stdout)
    if size != h.p["copyup"] + 1:
        raise BenchError(f"copy-up result has size {size}, expected {h.p['copyup'] + 1}")
    return t, {}


def wl_untar(h: Harness, m: Mount):
    d = os.path.join(m.path, "x")
    m.ctx.sh(["mkdir", d], timeout=h.timeout)
    t = m.ctx.timed(["tar", "-xf", h.tarball, "-C", d], timeout=h.timeout)
    n = count_files(h, m, d)
    if n != h.p["untar"]:
        raise BenchError(f"untar produced {n} files, expected {h.p['untar']}")
    os.sync()
    t_rm = m.ctx.timed(["rm", "-rf", d], timeout=h.timeout)
    if m.ctx.sh(["test", "-e", d], timeout=h.timeout, check=False).returncode == 0:
        raise BenchError("rm -rf left the directory behind")
    m.more["rm-rf"] = t_rm
    return t, {}


def fio_cmd(h: Harness, path: str, rw: str, size: int, runtime: int, jobs: int = 1) -> list:
    return (["fio", "--name=ufbench", f"--filename={path}", f"--rw={rw}", "--bs=4k",
             "--ioengine=psync", f"--size={size}", f"--runtime={runtime}", "--time_based",
             "--invalidate=0", "--randrepeat=1", "--output-format=json"]
            + (["--readonly"] if rw == "randread" else [])
            + ([f"--numjobs={jobs}", "--group_reporting"] if jobs > 1 else []))


def fio(h: Harness, m: Mount, path: str, rw: str, size: int, runtime: int = 0,
        jobs: int = 1) -> float:
    runtime = runtime or h.p["fio_time"]
    out = m.ctx.sh(fio_cmd(h, path, rw, size, runtime, jobs),
                   timeout=h.timeout + runtime * 3, capture=True)
    txt = out.stdout
    js = json.loads(txt[txt.index("{"):])
    job = js["jobs"][0]["read" if rw == "randread" else "write"]
    return float(job["iops"])


def wl_fio_read(h: Harness, m: Mount):
    region = min(h.p["fio_region"], h.p["bigfile"])
    m.ctx.sh(["dd", f"if={m.path}/big.bin", "of=/dev/null", "bs=1M", f"count={region // MiB}"],
             timeout=h.timeout)
    iops = fio(h, m, f"{m.path}/big.bin", "randread", region)
    return 1.0 / iops, {"iops": iops}


def wl_fio_write(h: Harness, m: Mount):
    iops = fio(h, m, f"{m.path}/rw.dat", "randwrite", h.p["fio_wsize"])
    return 1.0 / iops, {"iops": iops}


def wl_compileall(h: Harness, m: Mount):
    return m.ctx.timed([h.py, "-m", "compileall", "-q", os.path.join(m.path, "py")],
                       timeout=h.timeout), {}


def wl_compile_c(h: Harness, m: Mount):
    proj = os.path.join(m.path, "proj")
    t = m.ctx.timed(["make", "-s", "-j2", "-C", proj], timeout=h.timeout)
    m.ctx.sh([os.path.join(proj, "prog")], timeout=h.timeout)  # it links and runs
    return t, {}


def sandbox(root: str, inner: str) -> list:
    """bwrap over a mounted merged tree, set up as `unionfuse run` sets up its container: new
    pid, ipc and uts namespaces, a fresh /proc, /dev a tmpfs with the host's null, zero, full,
    random, urandom and tty, /sys read-only, the host's network, a clean environment."""
    return ["bwrap", "--bind", root, "/", "--dev", "/dev", "--proc", "/proc",
            "--ro-bind", "/sys", "/sys", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", "ufbench", "--die-with-parent", "--clearenv", "--setenv", "PATH", CTR_PATH,
            "--setenv", "HOME", "/root", "--setenv", "DEBIAN_FRONTEND", "noninteractive",
            "--", "/bin/sh", "-c", inner]


def wl_apt(h: Harness, m: Mount):
    """apt-get install --no-download of python3 (tiny: media-types) inside the merged tree,
    then the check that it runs there. Mounted systems: bwrap over the mount (in the rootless
    pass, in the pass's user namespace). unionfuse in the rootless pass: `unionfuse run
    --rootless` as the bench user, which makes its own user namespace (mapped the same way),
    mounts the union and tears it down, all inside the timed command."""
    pkg = h.p["apt_pkg"]
    inner = f"apt-get -q -y --no-download install {pkg} >/dev/null && {APT_CHECK[pkg]}"
    upper = os.path.join(m.root, "upper")
    timeout = max(h.timeout, 600)
    t0 = time.perf_counter()
    if m.mounted:
        out = m.ctx.sh(sandbox(m.path, inner), timeout=timeout, capture=True).stdout
    else:
        u = h.user
        cmd = ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--clear-groups", "--",
               m.system.binary, "run", "--rootless", "--upper", upper,
               "--overlay-workdir", os.path.join(m.root, "work"), "--hostname", "ufbench",
               "-e", "DEBIAN_FRONTEND=noninteractive", ":".join(m.lowers), "--",
               "/bin/sh", "-c", inner]
        out = sh(cmd, timeout=timeout, capture=True, env=h.ns_env, cwd=h.tmp).stdout
    t = time.perf_counter() - t0
    if out.strip().splitlines()[-1:] != ["1"]:
        raise BenchError(f"{pkg} does not work in the merged tree after the install: {out[-300:]!r}")
    if not os.path.isfile(os.path.join(upper, "var/lib/dpkg/status")):
        raise BenchError("the install left no var/lib/dpkg/status in the upper")
    return t, {}


def wl_git(h: Harness, m: Mount):
    """The run right after the one that rewrote .git/index (its st_dev/st_ino changed: the
    index is written back, a copy-up), and the third run."""
    cmd = ["git", "-c", "safe.directory=*", "-C", os.path.join(m.path, "repo"),
           "status", "--porcelain"]
    m.ctx.sh(cmd, timeout=h.timeout)  # rewrites the index
    t2 = m.ctx.timed(cmd, timeout=h.timeout)
    t3 = m.ctx.timed(cmd, timeout=h.timeout)
    out = m.ctx.sh(cmd, timeout=h.timeout, capture=True)
    if out.stdout.strip():
        raise BenchError(f"git status not clean: {out.stdout[:200]}")
    m.more["git-status-3rd"] = t3
    return t2, {}


def wl_par(h: Harness, m: Mount, kind: str, n: int):
    """n clients at once, each on its own part. Seconds per client's work (wall / n; fio:
    seconds per operation), so throughput at n / at 1 = sample(1) / sample(n)."""
    if kind == "find":
        cmds = [["find", os.path.join(m.path, f"c{c}"), "-printf", "%s %i %m\n"] for c in range(n)]
        return m.ctx.timed_all(cmds, timeout=h.timeout) / n, {}
    if kind == "untar":
        dirs = [os.path.join(m.path, f"x{c}") for c in range(n)]
        m.ctx.sh(["mkdir"] + dirs, timeout=h.timeout)
        t = m.ctx.timed_all([["tar", "-xf", h.par_tarball, "-C", d] for d in dirs],
                            timeout=h.timeout)
        for d in dirs:
            if (got := count_files(h, m, d)) != h.p["par_untar"]:
                raise BenchError(f"untar into {d} produced {got} files, expected {h.p['par_untar']}")
        return t / n, {}
    region = min(h.p["fio_region"], h.p["bigfile"])
    m.ctx.sh(["dd", f"if={m.path}/big.bin", "of=/dev/null", "bs=1M", f"count={region // MiB}"],
             timeout=h.timeout)
    iops = fio(h, m, f"{m.path}/big.bin", "randread", region, h.p["par_fio_time"], n)
    return 1.0 / iops, {"iops": iops}


CHOWN_SHIFT = ("import os,sys;s=int(sys.argv[2])\n"
               "def f(p):\n st=os.lstat(p);os.lchown(p,st.st_uid+s,st.st_gid+s)\n"
               "for dp,dn,fn in os.walk(sys.argv[1]):\n"
               " [f(os.path.join(dp,x)) for x in dn+fn]\n"
               "f(sys.argv[1])\n")


def wl_ctr_start(h: Harness, m: Mount):
    """First start of a container whose image must appear owned by its range (ids + SHIFT):
    kernel overlay copies every file up to chown it (podman's chown copy-up without idmapped
    layers); the FUSE systems show the range with uidmapping=/gidmapping=. Then find + stat."""
    t = 0.0
    if m.system.kind == "overlay":
        t += m.ctx.timed([h.py, "-c", CHOWN_SHIFT, m.path, str(CTR_SHIFT)], timeout=h.timeout)
    t += m.ctx.timed(["find", m.path, "-printf", "%U %G %s %m\n"], timeout=h.timeout)
    owners = m.ctx.sh(["find", m.path, "-printf", "%U\n"], timeout=h.timeout,
                      capture=True).stdout.split()
    want = {str(CTR_SHIFT), str(CTR_SHIFT + 1), str(CTR_SHIFT + 100)}
    if set(owners) != want:
        raise BenchError(f"owners seen {sorted(set(owners))[:6]}, expected {sorted(want)}")
    return t, {}


def ctr_opts(s: System) -> list[str]:
    """On-disk ids 0.. shown as CTR_SHIFT..., in fuse-overlayfs's order (on-disk:shown:count),
    which unionfuse reads too."""
    if s.kind == "overlay":
        return []
    m = f"0:{CTR_SHIFT}:{CTR_IDS}"
    return [f"uidmapping={m}", f"gidmapping={m}"]


STAT_SCRIPT = ("import os,sys,time;b=sys.argv[1];n=int(sys.argv[2]);"
               "names=[b+'/f%d'%i for i in range(n)];t=time.perf_counter();"
               "[os.lstat(x) for x in names];print(time.perf_counter()-t)")


def wl_scale(h: Harness, m: Mount):
    """Lookup + stat of files at depth 3 on a fresh mount (the kernel knows none of the
    names yet; the layers' own dentries are warm)."""
    out = sh([h.py, "-c", STAT_SCRIPT, os.path.join(m.path, "a", "b", "c"),
              str(h.p["scale_files"])], timeout=h.timeout, capture=True)
    return float(out.stdout.strip()), {}


@dataclass
class Workload:
    name: str
    group: str  # data it needs
    stack: str
    fn: object
    ext4: str = "flat"
    desc: str = ""
    reps_key: str = "reps"
    also: list[str] = field(default_factory=list)  # results it leaves in m.more
    opts: object = None  # System -> extra mount options
    no_ext4: bool = False
    stack_rl: str = ""  # another stack for the rootless pass
    self_mount_rl: bool = False  # rootless pass: unionfuse mounts it itself (unionfuse run)
    rootless_only: bool = False
    only_systems: tuple = ()  # run on these systems only (default: all)


def workloads(h: Harness) -> list[Workload]:
    p = h.p
    mb = lambda b: f"{b // MiB} MiB"  # noqa: E731
    w = []
    for n in (5, 20):
        for cold in (False, True):
            w.append(Workload(f"find-{n}L-{'cold' if cold else 'warm'}", "find", f"root{n}",
                              lambda h, m, c=cold: wl_find(h, m, c),
                              desc=f"find -printf '%s %i' over a {n}-layer rootfs-like stack"))
    for flag in ("-f", "-l"):
        for cold in (False, True):
            w.append(Workload(f"ls{flag}-{'cold' if cold else 'warm'}", "ls", "bigdir",
                              lambda h, m, f=flag, c=cold: wl_ls(h, m, f, c),
                              desc=f"ls {flag} of a {p['bigdir']}-entry directory merged from 3 layers"))
    for cold in (True, False):
        w.append(Workload(f"seqread-{'cold' if cold else 'warm'}", "seq", "data",
                          lambda h, m, c=cold: wl_seqread(h, m, c),
                          desc=f"dd bs=1M of a {mb(p['bigfile'])} lower file"))
    w.append(Workload("seqwrite-fsync", "seq", "data", wl_seqwrite, ext4="empty",
                      desc=f"dd bs=1M conv=fsync of {mb(p['bigfile'])} to a new file"))
    w.append(Workload("copyup", "copyup", "data", wl_copyup, ext4="empty",
                      desc=f"append 1 byte + fsync to a {mb(p['copyup'])} lower file"))
    w.append(Workload("untar", "untar", "data", wl_untar, ext4="empty", also=["rm-rf"],
                      desc=f"tar -x of {p['untar']} small files (rm-rf: then rm -rf them)"))
    w.append(Workload("fio-randread", "fio", "data", wl_fio_read, reps_key="fio_reps",
                      desc=f"fio psync 4k randread {p['fio_time']}s over {mb(min(p['fio_region'], p['bigfile']))} of a lower file (page cache warm)"))
    w.append(Workload("fio-randwrite", "fio", "data", wl_fio_write, ext4="empty",
                      reps_key="fio_reps",
                      desc=f"fio psync 4k randwrite {p['fio_time']}s on a {mb(p['fio_wsize'])} upper file"))
    w.append(Workload("compileall", "compileall", "py", wl_compileall, ext4="copy",
                      desc="python3 -m compileall -q over a stdlib copy in a lower"))
    w.append(Workload("compile-c", "compile", "cproj", wl_compile_c, ext4="copy",
                      desc=f"make -j2 of a {p['c_files']}-file C project in a lower"))
    w.append(Workload("git-status-2nd", "git", "git", wl_git, also=["git-status-3rd"],
                      desc=f"git status --porcelain in a {p['git_files']}-file repository in a "
                           f"lower, the run after the one that rewrote the index (3rd: the next)"))
    w.append(Workload("ctr-start", "ctr", "img-root", wl_ctr_start, no_ext4=True,
                      opts=ctr_opts, stack_rl="img-ns",
                      desc=f"make a {p['ctr_files']}-file image appear owned by ids +{CTR_SHIFT} "
                           f"(overlay: chown copy-up; FUSE: uidmapping=), then find + stat"))
    w.append(Workload("apt-install", "apt", "apt-root", wl_apt, no_ext4=True, stack_rl="apt-ns",
                      reps_key="apt_reps", self_mount_rl=True,
                      desc=f"apt-get install --no-download {p['apt_pkg']} over a Debian "
                           f"{APT_SUITE} minbase and a layer of apt lists and .debs (bwrap over the "
                           "mount; rootless uf: unionfuse run)"))
    w.append(Workload("apt-bwrap", "apt", "apt-root", wl_apt, no_ext4=True, stack_rl="apt-ns",
                      reps_key="apt_reps", rootless_only=True,
                      only_systems=("overlay", "uf", "ufno"),
                      desc="the same install with unionfuse mounted in the pass's user namespace "
                           "and bwrap over it, as the other systems (rootless pass only)"))
    for kind in ("find", "untar", "fio"):
        if kind == "fio" and not shutil.which("fio"):
            continue
        for n in (1, 2, 4):
            w.append(Workload(f"par-{kind}-{n}", "par" if kind != "fio" else "fio",
                              "par" if kind != "fio" else "data",
                              lambda h, m, k=kind, n=n: wl_par(h, m, k, n),
                              ext4="empty" if kind == "untar" else "flat", reps_key="par_reps",
                              desc=f"{n} clients at once: " + dict(
                                  find="find + stat of its own subtree (fresh mount)",
                                  untar=f"tar -x of {p['par_untar']} files into its own dir",
                                  fio=f"fio randread numjobs={n}, {p['par_fio_time']}s")[kind]))
    return w


# ---------------------------------------------------------------- runner

def summarize(samples: list[float]) -> dict:
    if not samples:
        return {}
    return dict(median=statistics.median(samples), min=min(samples), n=len(samples))


def run_pass(h: Harness, label: str, wls: list[Workload], res: dict) -> None:
    out = res.setdefault(label, {})
    for wl in wls:
        if wl.rootless_only and not h.ctx.rootless:
            continue
        reps = h.p[wl.reps_key] if not h.args.reps else h.args.reps
        systems = [s for s in h.systems if not (wl.no_ext4 and s.kind == "ext4")
                   and (not wl.only_systems or s.name in wl.only_systems)]
        stack = wl.stack_rl if h.ctx.rootless and wl.stack_rl else wl.stack
        log(f"[{label}] {wl.name} x{reps}")
        names = [wl.name] + wl.also
        for n in names:
            for s in systems:
                out.setdefault(n, {}).setdefault(s.name, dict(samples=[], errors=[], extra=[]))
        for rep in range(reps):
            for s in systems:
                try:
                    if wl.self_mount_rl and h.ctx.rootless and s.name == "uf":
                        m = h.prepare(s, stack)
                    else:
                        m = h.mount(s, stack, wl.ext4, wl.opts(s) if wl.opts else ())
                except BenchError as e:
                    out[wl.name][s.name]["errors"].append(f"mount: {e}")
                    h.note_odd(s, f"{wl.name}: mount failed: {e}")
                    continue
                try:
                    st0 = cpu_steal()
                    t, extra = wl.fn(h, m)
                    out[wl.name][s.name].setdefault("steal", []).append(
                        round(steal_pct(st0, cpu_steal()), 1))
                    out[wl.name][s.name]["samples"].append(t)
                    if extra:
                        out[wl.name][s.name]["extra"].append(extra)
                    for k, v in m.more.items():
                        out[k][s.name]["samples"].append(v)
                except Exception as e:  # noqa: BLE001 - record and go on
                    out[wl.name][s.name]["errors"].append(str(e))
                    h.note_odd(s, f"{wl.name} rep {rep}: {e}")
                    if m.mounted and not is_alive(m):
                        h.note_odd(s, f"{wl.name}: daemon gone / mount dead after the error")
                finally:
                    h.unmount(m)
        for n in names:
            for sname, r in out[n].items():
                r.update(summarize(r["samples"]))


def is_alive(m: Mount) -> bool:
    try:
        return m.ctx.sh(["stat", m.path], timeout=10, check=False).returncode == 0
    except (BenchError, OSError):
        return False


def run_scale(h: Harness, label: str, res: dict) -> None:
    systems = [s for s in h.systems if s.kind in ("overlay", "unionfuse") and s.name != "ufnp"]
    out = res.setdefault(label, {})
    reps = h.args.reps or h.p["reps"]
    log(f"[{label}] scaling {h.p['scale_layers']} x{reps}")
    for n in h.p["scale_layers"]:
        key = f"scale-{n}"
        for s in systems:
            out.setdefault(key, {}).setdefault(s.name, dict(samples=[], errors=[], extra=[]))
        for rep in range(reps):
            for s in systems:
                r = out[key][s.name]
                if r["errors"] and not r["samples"]:
                    continue  # e.g. kernel overlay refuses 500 layers: don't retry
                try:
                    m = h.mount(s, f"scale{n}")
                except BenchError as e:
                    r["errors"].append(f"mount: {e}")
                    if s.kind == "unionfuse":
                        h.note_odd(s, f"{n} layers: mount failed: {e}")
                    continue
                try:
                    t, _ = wl_scale(h, m)
                    r["samples"].append(t)
                except Exception as e:  # noqa: BLE001 - record and go on
                    r["errors"].append(str(e))
                    h.note_odd(s, f"scale {n}: {e}")
                finally:
                    h.unmount(m)
        for r in out[key].values():
            r.update(summarize(r["samples"]))


def run_rss(h: Harness, res: dict) -> None:
    out = res.setdefault("rss", {})
    n = h.p["rss_files"]
    log(f"rss/fds after stat of {n} files")
    for s in h.systems:
        if not s.fuse:
            continue
        rec: dict = {}
        try:
            m = h.mount(s, "rss")
        except BenchError as e:
            out[s.name] = dict(error=str(e))
            continue
        try:
            time.sleep(0.3)
            pids = daemon_pids(m.path)
            if not pids:
                raise BenchError("daemon pid not found")
            pid = pids[0]
            rec["pid_count"] = len(pids)
            rec["idle"] = proc_status(pid)
            sh(["find", m.path, "-printf", "%s %i\n"], timeout=h.timeout * 5)
            rec["after_stat"] = proc_status(pid)
            drop_caches(2)
            time.sleep(2)
            rec["after_forget"] = proc_status(pid)
        except (BenchError, OSError) as e:
            rec["error"] = str(e)
            h.note_odd(s, f"rss: {e}")
        finally:
            h.unmount(m)
        out[s.name] = rec


# ---------------------------------------------------------------- report

def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def pass_names(results: dict, label: str) -> list[str]:
    """The systems of a pass, in the order they ran."""
    return results.get("pass_systems", {}).get(label) or [s["name"] for s in results["systems"]]


def sys_labels(results: dict, label: str) -> dict:
    src = results.get("rootless_systems", []) if label.startswith("rootless") else results["systems"]
    return {s["name"]: s["label"] for s in src}


def med(per: dict, wl: str, s: str):
    return per.get(wl, {}).get(s, {}).get("median")


def scaling(per: dict, kind: str, n: int, s: str):
    """Throughput with n clients ÷ throughput with 1 (samples are per client's work)."""
    return ratio(med(per, f"par-{kind}-1", s), med(per, f"par-{kind}-{n}", s))


def report(results: dict, outdir: str) -> None:
    meta = results["meta"]
    lines = [f"# unionfuse benchmark ({meta['mode']})", "",
             f"- commit `{meta['commit']}`{' (src/ had uncommitted changes: the binary is the working tree)' if meta['dirty'] else ''}",
             f"- kernel `{meta['kernel']}`, CPU {meta['cpu']} x{meta['ncpu']}, {meta['date']}",
             f"- binary: {meta['binary']}",
             f"- layers, uppers and mounts on: {meta.get('scratch', '?')}"]
    rl = meta.get("rootless")
    if rl:
        lines.append(f"- rootless pass: user `{rl['user']}` (uid {rl['uid']}), subordinate ids "
                     f"{rl['subuid']} / gids {rl['subgid']}; uid_map `{rl.get('uid_map', '?')}`; "
                     "the driver drops caches and times from outside the namespace")
    if results["systems"]:
        lines.append("")
        lines.append("Systems (root pass): " + "; ".join(f"**{s['name']}** = {s['label']}"
                                                        for s in results["systems"]))
    if results.get("rootless_systems"):
        lines.append("")
        lines.append("Systems (rootless pass, in the user namespace): " + "; ".join(
            f"**{s['name']}** = {s['label']}" for s in results["rootless_systems"]))
    for n in results["notes"]:
        lines.append(f"- note: {n}")
    lines.append("")
    for label, per in results["passes"].items():
        names = pass_names(results, label)
        lines += [f"## {label}: median ratio to kernel overlayfs (min ratio in parentheses)", "",
                  "| workload | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * len(names)]
        for wl, bysys in per.items():
            if wl == "rss":
                continue
            ov = bysys.get("overlay", {})
            cells = []
            for n in names:
                r = bysys.get(n)
                if r is None:
                    cells.append("")
                elif not r.get("samples"):
                    cells.append("error" if r.get("errors") else "–")
                else:
                    cells.append(f"{fmt(ratio(r['median'], ov.get('median')))} "
                                 f"({fmt(ratio(r['min'], ov.get('min')))})"
                                 + (" !" if r.get("errors") else ""))
            lines.append(f"| {wl} | " + " | ".join(cells) + " |")
        if "ext4" in names:
            lines += ["", f"## {label}: median ratio to ext4", "",
                      "| workload | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            for wl, bysys in per.items():
                if wl.startswith("scale") or wl == "rss" or "ext4" not in bysys:
                    continue
                e = bysys.get("ext4", {})
                lines.append(f"| {wl} | " + " | ".join(
                    fmt(ratio(bysys.get(n, {}).get("median"), e.get("median"))) for n in names) + " |")
        lines += ["", f"## {label}: absolute medians / min (ms; fio: µs per op and IOPS)", "",
                  "| workload | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for wl, bysys in per.items():
            if wl == "rss":
                continue
            cells = []
            for n in names:
                r = bysys.get(n, {})
                if not r.get("samples"):
                    cells.append("")
                    continue
                if r.get("extra") and "iops" in r["extra"][0]:
                    iops = statistics.median(x["iops"] for x in r["extra"])
                    cells.append(f"{r['median'] * 1e6:.1f} / {r['min'] * 1e6:.1f} ({iops:.0f} IOPS)")
                else:
                    cells.append(f"{r['median'] * 1e3:.1f} / {r['min'] * 1e3:.1f}")
            lines.append(f"| {wl} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += scaling_table(per, label, names)
        sc = {k: v for k, v in per.items() if k.startswith("scale-")}
        if sc:
            lines += [f"## {label}: lookup scaling (stat of 1000 files at depth 3, fresh mount)", "",
                      "| layers | " + " | ".join(f"{s} ms | {s} vs 1 layer" for s in
                                                   next(iter(sc.values())).keys()) + " | unionfuse / overlay |",
                      "|---|" + "---:|---:|" * len(next(iter(sc.values()))) + "---:|"]
            first = next(iter(sc.values()))
            for k, bysys in sc.items():
                cells = []
                for s in first:
                    r = bysys.get(s, {})
                    base = first[s].get("median")
                    if r.get("samples"):
                        cells += [f"{r['median'] * 1e3:.2f}", fmt(ratio(r["median"], base))]
                    else:
                        err = (r.get("errors") or ["?"])[0]
                        cells += ["failed", err[:80].replace("|", "/")]
                uf = bysys.get("uf", {}).get("median")
                ov = bysys.get("overlay", {}).get("median")
                lines.append(f"| {k.split('-')[1]} | " + " | ".join(cells) + f" | {fmt(ratio(uf, ov))} |")
            lines.append("")
    lines += side_by_side(results)
    rss = results.get("rss")
    if rss:
        lines += [f"## daemon memory and fds after stat of {meta['rss_files']} files (unpinned pass)", "",
                  "| system | idle RSS MiB / fds | after stat | after drop_caches=2 | peak RSS MiB |",
                  "|---|---:|---:|---:|---:|"]
        for sname, rec in rss.items():
            if "idle" not in rec:
                lines.append(f"| {sname} | error: {rec.get('error', '?')[:80]} | | | |")
                continue
            c = lambda r: f"{r['VmRSS'] / 1024:.1f} / {r['fds']}"  # noqa: E731
            lines.append(f"| {sname} | {c(rec['idle'])} | {c(rec['after_stat'])} | "
                         f"{c(rec['after_forget'])} | {rec['after_forget']['VmHWM'] / 1024:.1f} |")
        lines.append("")
    lines += rootless_targets_table(results)
    lines += targets_table(results)
    lines += steal_table(results)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for label in results["passes"]:
        with open(os.path.join(outdir, f"ratios-{label}.svg"), "w") as f:
            f.write(svg_chart(results, label))
    for pin in ("unpinned", "pinned-cpu0"):
        if pin in results["passes"] and f"rootless-{pin}" in results["passes"]:
            with open(os.path.join(outdir, f"ratios-root-vs-rootless-{pin}.svg"), "w") as f:
                f.write(svg_side_by_side(results, pin))


STEAL_NOTE = 5.0


def steal_table(results: dict) -> list[str]:
    """The samples the hypervisor took more than STEAL_NOTE % of the CPU time from, per pass:
    read their times with care (each FUSE round trip waits for a stolen vCPU). /proc/stat
    counts in 10 ms ticks, so a sample of tens of ms reads coarse."""
    out = ["", f"## host CPU steal: samples taken while the hypervisor took over {STEAL_NOTE:.0f}% "
           "of the machine's CPU time", ""]
    rows = []
    for label, per in results["passes"].items():
        for wname, systems in per.items():
            for sname, r in systems.items():
                for i, pct in enumerate(r.get("steal", [])):
                    if pct > STEAL_NOTE and i < len(r.get("samples", [])):
                        rows.append(f"| {label} | {wname} | {sname} | {i + 1} | {pct:.1f} | "
                                    f"{r['samples'][i]:.4g} |")
    if not rows:
        return out + ["None: no sample ran under more than that (steal is recorded per sample "
                      "in results.json).", ""]
    return out + ["| pass | workload | system | repetition | steal % | sample (s; fio: s per op) |",
                  "|---|---|---|---:|---:|---:|"] + rows + [""]


def scaling_table(per: dict, label: str, names: list[str]) -> list[str]:
    kinds = [k for k in ("find", "untar", "fio") if f"par-{k}-1" in per]
    if not kinds:
        return []
    cols = [(k, n) for k in kinds for n in (2, 4)]
    lines = [f"## {label}: parallel clients, throughput at N ÷ at 1 (in brackets: ÷ kernel "
             "overlayfs's)", "",
             "| system | " + " | ".join(f"{k} ×{n}" for k, n in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for s in names:
        if s not in per.get(f"par-{kinds[0]}-1", {}):
            continue
        cells = []
        for k, n in cols:
            sc, ov = scaling(per, k, n, s), scaling(per, k, n, "overlay")
            cells.append(f"{fmt(sc)} ({fmt(ratio(sc, ov))})" if sc is not None else "–")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines + [""]


SIDE = [("root", "uf"), ("root", "ufnp"), ("root", "fo1"), ("root", "fo2"),
        ("rootless", "uf"), ("rootless", "fo1"), ("rootless", "fo2")]


def side_by_side(results: dict) -> list[str]:
    """The rootless pass next to the root pass: each a ratio to its own pass's kernel overlay."""
    out = []
    for pin in ("unpinned", "pinned-cpu0"):
        root, rl = results["passes"].get(pin), results["passes"].get(f"rootless-{pin}")
        if not root or not rl:
            continue
        cols = [(p, s) for p, s in SIDE
                if s in pass_names(results, pin if p == "root" else f"rootless-{pin}")]
        out += [f"## root and rootless side by side ({pin}): median ratio to the same pass's "
                "kernel overlayfs; overlay's median in ms (fio: µs per op)", "",
                "| workload | overlay ms (root) | overlay ms (rootless) | "
                + " | ".join(f"{s} ({p})" for p, s in cols) + " |",
                "|---|---:|---:|" + "---:|" * len(cols)]
        for wl in list(dict.fromkeys(list(root) + list(rl))):
            if wl == "rss" or wl.startswith("scale"):
                continue
            by = {"root": root.get(wl, {}), "rootless": rl.get(wl, {})}
            unit = 1e6 if "fio" in wl else 1e3
            ms = lambda d: fmt(d.get("overlay", {}).get("median") * unit, 1) \
                if d.get("overlay", {}).get("median") is not None else "–"  # noqa: E731
            cells = [fmt(ratio(by[p].get(s, {}).get("median"), by[p].get("overlay", {}).get("median")))
                     for p, s in cols]
            out.append(f"| {wl} | {ms(by['root'])} | {ms(by['rootless'])} | " + " | ".join(cells) + " |")
        out.append("")
    return out


# The rootless targets (docs/performance.md): median ratio to kernel overlayfs in the same user
# namespace, same run. (row, workloads, limit); parallel rows: scaling at 4 ÷ overlay's, at least.
RL_TARGETS = [
    ("metadata, warm", ["find-5L-warm", "find-20L-warm", "ls-f-warm", "ls-l-warm",
                        "git-status-2nd", "git-status-3rd"], 1.2),
    ("metadata, cold", ["find-5L-cold", "find-20L-cold", "ls-f-cold", "ls-l-cold"], 1.5),
    ("sequential read of lower files", ["seqread-cold", "seqread-warm"], 1.2),
    ("sequential write + fsync", ["seqwrite-fsync"], 1.2),
    ("random 4k read", ["fio-randread"], 1.2),
    ("random 4k write", ["fio-randwrite"], 1.5),
    ("untar, rm -rf", ["untar", "rm-rf"], 1.3),
    ("compile", ["compile-c", "compileall"], 1.15),
    ("package install", ["apt-install", "apt-bwrap"], 1.15),
]
RL_SCALING = ("parallel throughput at 4 clients (scaling ÷ overlay's)",
              ["par-find-4", "par-untar-4", "par-fio-4"], 0.8)


def rootless_targets_table(results: dict) -> list[str]:
    out = []
    for label, per in results["passes"].items():
        if not label.startswith("rootless"):
            continue
        out += [f"## targets, {label}: unionfuse's median ratio to kernel overlayfs "
                "(userxattr, same namespace)", "",
                "| target | workload | limit | uf | fo1 | fo2 | met | ahead of both fuse-overlayfs |",
                "|---|---|---:|---:|---:|---:|---|---|"]

        def row(name, wl, limit, vals, higher_better=False):
            uf, f1, f2 = vals
            if uf is None:
                return
            met = (uf >= limit) if higher_better else (uf <= limit)
            peers = [v for v in (f1, f2) if v is not None]
            ahead = all((uf > v) if higher_better else (uf < v) for v in peers)
            out.append(f"| {name} | {wl} | {'≥' if higher_better else '≤'}{limit} | {fmt(uf)} | "
                       f"{fmt(f1)} | {fmt(f2)} | {'met' if met else 'not met'} | "
                       f"{('yes' if ahead else 'no') if peers else 'n/a'} |")

        for name, wls, limit in RL_TARGETS:
            for wl in wls:
                ov = med(per, wl, "overlay")
                row(name, wl, limit, [ratio(med(per, wl, s), ov) for s in ("uf", "fo1", "fo2")])
        name, wls, limit = RL_SCALING
        for wl in wls:
            kind = wl.split("-")[1]
            ov = scaling(per, kind, 4, "overlay")
            row(name, wl, limit, [ratio(scaling(per, kind, 4, s), ov) for s in ("uf", "fo1", "fo2")],
                higher_better=True)
        out.append("")
    return out


def targets_table(results: dict) -> list[str]:
    lines = ["## root pass: targets vs measured median ratio to kernel overlayfs", "",
             "| workload | pass | target uf | uf | target ufnp | ufnp | fo1 | fo2 | met |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for label, per in results["passes"].items():
        if label.startswith("rootless"):
            continue
        for wl, (t_uf, t_np) in TARGETS.items():
            bysys = per.get(wl)
            if not bysys:
                continue
            ov = bysys.get("overlay", {}).get("median")
            r = {n: ratio(bysys.get(n, {}).get("median"), ov) for n in ("uf", "ufnp", "fo1", "fo2")}
            ok = []
            if r["uf"] is not None:
                ok.append(r["uf"] <= t_uf)
            if r["ufnp"] is not None:
                ok.append(r["ufnp"] <= t_np)
            for peer in ("fo1", "fo2"):
                if r[peer] is not None and r["uf"] is not None:
                    ok.append(r["uf"] < r[peer])
            met = "yes" if ok and all(ok) else ("no" if ok else "n/a")
            lines.append(f"| {wl} | {label} | ≤{t_uf} | {fmt(r['uf'])} | ≤{t_np} | {fmt(r['ufnp'])} | "
                         f"{fmt(r['fo1'])} | {fmt(r['fo2'])} | {met} |")
    lines += ["", "`met` = unionfuse (both variants) within target and faster than every "
              "fuse-overlayfs present.", ""]
    return lines


COLORS = {"ext4": "#7f7f7f", "fo1": "#d62728", "fo2": "#ff7f0e", "uf": "#1f77b4", "ufnp": "#17becf"}
RL_COLORS = {"fo1": "#f4a6a6", "fo2": "#ffd39b", "uf": "#2ca02c", "ufno": "#98df8a"}


def svg_chart(results: dict, label: str) -> str:
    per = results["passes"][label]
    labels = sys_labels(results, label)
    names = [n for n in pass_names(results, label) if n != "overlay"]
    series = [(labels.get(n, n), COLORS.get(n, "#555"),
               {wl: ratio(med(per, wl, n), med(per, wl, "overlay")) for wl in per}) for n in names]
    rows = [wl for wl in per if not wl.startswith("scale") and wl != "rss"]
    return svg_bars(f"Median time ratio to kernel overlayfs ({label}, {results['meta']['mode']}, "
                    f"{results['meta']['commit'][:10]}); log scale, lower is better", rows, series)


def svg_side_by_side(results: dict, pin: str) -> str:
    root, rl = results["passes"][pin], results["passes"][f"rootless-{pin}"]
    series = []
    for p, s in SIDE:
        per = root if p == "root" else rl
        if s not in pass_names(results, pin if p == "root" else f"rootless-{pin}"):
            continue
        color = (COLORS if p == "root" else RL_COLORS).get(s, "#555")
        series.append((f"{s} {p}", color,
                       {wl: ratio(med(per, wl, s), med(per, wl, "overlay")) for wl in per}))
    rows = [wl for wl in dict.fromkeys(list(root) + list(rl))
            if not wl.startswith("scale") and wl != "rss"]
    return svg_bars(f"Root and rootless ({pin}, {results['meta']['mode']}, "
                    f"{results['meta']['commit'][:10]}): median time ratio to the same pass's "
                    "kernel overlayfs; log scale, lower is better", rows, series)


def svg_bars(title: str, rows: list[str], series: list[tuple]) -> str:
    import math
    lo, hi = 1 / 16, 64
    left, width, bar, gap = 150, 560, 9, 8
    top = 60 + 14 * (len(series) // 5)
    h = top + len(rows) * (bar * len(series) + gap) + 40
    W = left + width + 60

    def x(v):
        v = min(max(v, lo), hi)
        return left + width * (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{h}" fill="white"/>',
         f'<text x="10" y="18" font-size="12" font-weight="bold">{title}</text>']
    lx, ly = 10, 28
    for i, (name, color, _) in enumerate(series):
        if i and i % 5 == 0:
            lx, ly = 10, ly + 14
        o.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{color}"/>'
                 f'<text x="{lx + 14}" y="{ly + 9}">{name}</text>')
        lx += 14 + 6.2 * len(name) + 14
    v = lo
    while v <= hi:
        X = x(v)
        o.append(f'<line x1="{X:.1f}" y1="{top - 8}" x2="{X:.1f}" y2="{h - 35}" stroke="#ddd"/>'
                 f'<text x="{X:.1f}" y="{h - 22}" text-anchor="middle">{v:g}</text>')
        v *= 2
    y = top
    for wl in rows:
        o.append(f'<text x="{left - 6}" y="{y + bar * len(series) / 2 + 4:.1f}" '
                 f'text-anchor="end">{wl}</text>')
        for name, color, vals in series:
            r = vals.get(wl)
            if r is not None:
                X0, X1 = x(1.0), x(r)
                o.append(f'<rect x="{min(X0, X1):.1f}" y="{y}" width="{max(abs(X1 - X0), 1):.1f}" '
                         f'height="{bar - 1}" fill="{color}"><title>{name}: {r:.2f}</title></rect>')
                o.append(f'<text x="{max(X0, X1) + 3:.1f}" y="{y + bar - 2}" font-size="8">{r:.2f}</text>')
            y += bar
        y += gap
    o.append(f'<line x1="{x(1):.1f}" y1="{top - 8}" x2="{x(1):.1f}" y2="{h - 35}" stroke="black"/>')
    o.append(f'<text x="{x(1):.1f}" y="{h - 8}" text-anchor="middle">ratio (1 = kernel overlayfs)</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ---------------------------------------------------------------- main

def git_meta(repo: str) -> tuple[str, bool]:
    try:
        c = sh(["git", "-C", repo, "rev-parse", "HEAD"], capture=True).stdout.strip()
        d = sh(["git", "-C", repo, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
               capture=True).stdout.strip()
        return c, bool(d)
    except BenchError:
        return "unknown", False


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def scratch_fs(path: str) -> str:
    """The filesystem under `path` as the report names it: type, device, and for ext4 whether
    it has a journal (without one, ext4 reads the inode table around recently freed inodes on
    every create: run.sh's scratch filesystem)."""
    best = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a = line.split()
            mnt, rest = a[4], a[a.index("-") + 1:]
            if (path + "/").startswith(mnt.rstrip("/") + "/") and (not best or len(mnt) > len(best[0])):
                best = (mnt, rest[0], rest[1])
    if not best:
        return "?"
    mnt, fstype, dev = best
    desc = f"{fstype} on {dev} at {mnt}"
    if fstype == "ext4":
        try:
            with open(f"/sys/fs/ext4/{os.path.basename(dev)}/journal_task") as f:
                desc += ", no journal" if f.read().strip() == "<none>" else ", with a journal"
        except OSError:
            pass
    return desc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true",
                    help="minimal sizes, 1 repetition: checks the harness, measures nothing")
    ap.add_argument("--passes", default="root,rootless",
                    help="root (as root, beside ext4) and/or rootless (in a user namespace)")
    ap.add_argument("--bench-user", default="",
                    help="ordinary user with /etc/subuid and /etc/subgid ranges for the rootless pass")
    ap.add_argument("--pin", action="store_true", help="also run everything under taskset -c 0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", required=True, help="scratch dir (layers, mounts); run.sh removes it")
    ap.add_argument("--bin", required=True, help="unionfuse binary")
    ap.add_argument("--fo2", default="", help="fuse-overlayfs 2.0 binary")
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--commit", default="", help="the binary was built from this commit")
    ap.add_argument("--cache", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "unionfuse-bench"),
        help="where the Debian layers of the package install are built once")
    ap.add_argument("--only", default="", help="comma-separated workload name prefixes")
    ap.add_argument("--systems", default="", help="comma-separated system names to keep")
    ap.add_argument("--reps", type=int, default=0, help="override repetitions")
    ap.add_argument("--rss-files", type=int, default=0, help="N for the RSS/fd test")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench.py needs root (mount, drop_caches)", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):
        print("bench.py needs Python >= 3.11", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    h = Harness(args)
    if args.rss_files:
        h.p["rss_files"] = args.rss_files
    os.makedirs(args.out, exist_ok=True)
    commit, dirty = (args.commit, False) if args.commit else git_meta(args.repo)
    ncpu = os.cpu_count()
    results = dict(meta=dict(
        mode=h.mode, commit=commit, dirty=dirty,
        kernel=platform.release(), cpu=cpu_model(), ncpu=ncpu,
        date=time.strftime("%Y-%m-%d %H:%M:%S %z"), binary=args.bin, params=h.p,
        rss_files=h.p["rss_files"], python=sys.version.split()[0], scratch=scratch_fs(h.tmp)),
        systems=[], rootless_systems=[], pass_systems={}, notes=h.notes, passes={}, odd=h.odd)
    only = [x for x in args.only.split(",") if x]
    sel = lambda name: not only or any(name.startswith(o) for o in only)  # noqa: E731
    t0 = time.monotonic()
    try:
        h.detect_systems()
        results["systems"] = [dict(name=s.name, label=s.label, kind=s.kind, note=s.note)
                              for s in h.systems]
        results["rootless_systems"] = [dict(name=s.name, label=s.label, kind=s.kind, note=s.note)
                                       for s in h.rl_systems]
        if h.user:
            u = h.user
            results["meta"]["rootless"] = dict(
                user=u.name, uid=u.uid, subuid=f"{u.subuid}:{u.subuid_n}",
                subgid=f"{u.subgid}:{u.subgid_n}")
        elif "rootless" in args.passes.split(","):
            h.notes.append("no --bench-user: rootless pass skipped")
        if not shutil.which("fio"):
            h.notes.append("fio not installed: fio workloads skipped")
        wls = [w for w in workloads(h) if sel(w.name)
               and (w.group != "fio" or shutil.which("fio"))]
        if any(w.group == "apt" for w in wls) and not shutil.which("bwrap"):
            h.notes.append("bwrap (bubblewrap) not installed: offline package install skipped")
            wls = [w for w in wls if w.group != "apt"]
        wanted = {w.group for w in wls}
        if h.systems and sel("scale"):
            wanted.add("scale")
        if h.systems and sel("rss"):
            wanted.add("rss")
        h.build_data(wanted)
        wls = [w for w in wls if w.group != "apt" or {w.stack, w.stack_rl} & h.stacks.keys()]
        allcpus = os.sched_getaffinity(0)
        passes = [("unpinned", allcpus)] + ([("pinned-cpu0", {0})] if args.pin else [])
        root_systems = h.systems
        for label, cpus in passes:
            os.sched_setaffinity(0, cpus)  # inherited by the tools, the helper and the daemons
            if root_systems:
                h.ctx, h.systems = LocalCtx(), root_systems
                results["pass_systems"][label] = [s.name for s in h.systems]
                run_pass(h, label, wls, results["passes"])
                if "scale" in wanted:
                    run_scale(h, label, results["passes"])
            if h.rl_systems:
                rl = f"rootless-{label}"
                ctx = h.enter_namespace()
                results["meta"].setdefault("rootless", {})["uid_map"] = ctx.uid_map
                h.ctx, h.systems = ctx, h.rl_systems
                results["pass_systems"][rl] = [s.name for s in h.systems]
                try:
                    run_pass(h, rl, wls, results["passes"])
                finally:
                    h.unmount_all()
                    ctx.close()
                    h.ctx, h.systems = LocalCtx(), root_systems
            os.sched_setaffinity(0, allcpus)
        if "rss" in wanted:
            run_rss(h, results)
    except KeyboardInterrupt:
        log("interrupted: unmounting")
        results["interrupted"] = True
        return_code = 130
    except Exception:
        traceback.print_exc()
        results["crashed"] = traceback.format_exc()
        return_code = 1
    else:
        return_code = 0
    finally:
        h.unmount_all()
    results["elapsed_s"] = time.monotonic() - t0
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    for per in results["passes"].values():  # also for an interrupted pass
        for bysys in per.values():
            for r in bysys.values():
                r.update(summarize(r["samples"]))
    if results["systems"] or results["rootless_systems"]:
        report(results, args.out)
    log(f"done in {results['elapsed_s']:.0f}s: {args.out}/table.md")
    if h.odd:
        log("odd things seen:\n  " + "\n  ".join(h.odd))
    return return_code


if __name__ == "__main__":
    sys.exit(main())
