"""Per-process CPU caps for the bench, through Linux cgroups (v1 ``cpu`` or v2 ``cpu.max``).

Why: on a small VM (2 cores) two uncapped workers take both cores and the
load driver, a separate process that needs ~0.5-0.9 core, starves; a
"``workers 2`` vs one process" run then measures the driver, not the
workers.  Giving *each worker process* its own group with the same quota
(e.g. 30 % of one core) turns a worker into a fixed CPU budget, leaves CPU
for the uncapped driver and supervisor, and makes the question answerable:
do two budgets serve twice the calls of one?

The quota period is short (10 ms, the kernel's default is 100 ms): a worker
over its quota stalls until the period ends, so at 30 % of 100 ms it would
run 30 ms then stall 70 ms and every call would be late from throttling
alone; at 10 ms a stall is at most 7 ms, under the bench's 20 ms bound.

Only root (or a delegated, writable hierarchy) can do this.  Everything here
raises :class:`Unavailable` with a reason instead, and the bench falls back
to the uncapped comparison.  Groups are named ``twibridge-bench-<pid>-<i>``
(``pid`` = the bench's), made directly under the hierarchy's root, and
removed by :meth:`CpuGroups.close` (pids still inside go back to the bench's
own group first: a group with members cannot be removed).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from types import TracebackType

PREFIX = "twibridge-bench-"
#: The kernel refuses a CFS quota below 1 ms.
MIN_QUOTA_US = 1000
#: ``rmdir`` of a group whose last process is still exiting fails with EBUSY for a moment: retry, bounded.
RMDIR_TRIES, RMDIR_WAIT_S = 25, 0.2


class Unavailable(Exception):
    """No usable, writable cgroup ``cpu`` controller here (the message says why)."""


@dataclass(frozen=True)
class Hierarchy:
    """The cgroup hierarchy that has the ``cpu`` controller."""

    version: int
    #: Where it is mounted, e.g. ``/sys/fs/cgroup/cpu`` (v1) or ``/sys/fs/cgroup`` (v2).
    mount: str
    #: This process's own group in it (a directory under ``mount``): where pids go back to.
    home: str

    def procs_file(self, group: str) -> str:
        return os.path.join(group, "cgroup.procs")


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, value: str) -> None:
    # One write() per value: cgroup files take one value per write, and buffering could merge two.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _own_group(version: int) -> str:
    """This process's group path (relative to the hierarchy root) from ``/proc/self/cgroup``."""
    for line in _read("/proc/self/cgroup").splitlines():
        hier_id, controllers, path = line.split(":", 2)
        if version == 1 and "cpu" in controllers.split(","):
            return path
        if version == 2 and hier_id == "0" and controllers == "":
            return path
    return "/"


def find_hierarchy() -> Hierarchy:
    """The v1 ``cpu`` hierarchy if mounted (it then owns the controller), else a v2 one with ``cpu``.

    Raises :class:`Unavailable` when neither is there or we may not write it.
    """
    v2_mounts: list[str] = []
    try:
        mounts = _read("/proc/self/mounts").splitlines()
    except OSError as exc:
        raise Unavailable(f"cannot read /proc/self/mounts: {exc}") from exc
    found: Hierarchy | None = None
    for line in mounts:
        fields = line.split()
        if len(fields) < 4:
            continue
        mount, fstype, options = fields[1], fields[2], fields[3].split(",")
        if fstype == "cgroup" and "cpu" in options:
            found = Hierarchy(1, mount, _join(mount, _own_group(1)))
            break
        if fstype == "cgroup2":
            v2_mounts.append(mount)
    if found is None:
        for mount in v2_mounts:
            try:
                controllers = _read(os.path.join(mount, "cgroup.controllers")).split()
            except OSError:
                continue
            if "cpu" in controllers:
                found = Hierarchy(2, mount, _join(mount, _own_group(2)))
                break
    if found is None:
        where = f" (cgroup2 at {', '.join(v2_mounts)} has no cpu controller)" if v2_mounts else ""
        raise Unavailable(f"no cgroup cpu controller mounted{where}")
    if not os.access(found.mount, os.W_OK):
        raise Unavailable(f"{found.mount} is not writable (uid {os.geteuid()}; the caps need root)")
    return found


def _join(mount: str, group: str) -> str:
    path = os.path.join(mount, group.lstrip("/")).rstrip("/")
    return path if os.path.isdir(path) else mount


def group_of(pid: int, hierarchy: Hierarchy) -> str:
    """The directory of ``pid``'s group in ``hierarchy`` (to check a move took effect)."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        hier_id, controllers, path = line.split(":", 2)
        if (hierarchy.version == 1 and "cpu" in controllers.split(",")) or \
                (hierarchy.version == 2 and hier_id == "0" and controllers == ""):
            return os.path.join(hierarchy.mount, path.lstrip("/")).rstrip("/")
    return ""


def child_pids(ppid: int) -> list[int]:
    """The direct children of ``ppid``.

    ``/proc/<pid>/task/<tid>/children`` when the kernel has it (cheap), else
    a scan of every ``/proc/<pid>/stat`` for its parent pid.
    """
    kids: set[int] = set()
    have_children_files = False
    try:
        tids = os.listdir(f"/proc/{ppid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            kids.update(int(p) for p in _read(f"/proc/{ppid}/task/{tid}/children").split())
            have_children_files = True
        except (OSError, ValueError):
            continue
    if have_children_files:
        return sorted(kids)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            # The command name may hold spaces or ")": the fields after the last ")" are safe.
            if int(_read(f"/proc/{name}/stat").rsplit(")", 1)[1].split()[1]) == ppid:
                kids.add(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(kids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(hierarchy: Hierarchy) -> list[str]:
    """Remove empty groups left by an earlier bench that was SIGKILLed (its pid is gone); only ours."""
    removed = []
    for name in os.listdir(hierarchy.mount):
        parts = name[len(PREFIX):].split("-") if name.startswith(PREFIX) else []
        if len(parts) != 2 or not parts[0].isdigit() or _alive(int(parts[0])):
            continue
        try:
            os.rmdir(os.path.join(hierarchy.mount, name))  # fails (and stays) if anything is still inside
            removed.append(name)
        except OSError:
            continue
    return removed


class CpuGroups:
    """``count`` sibling groups with the same CPU cap, one per worker process.

    Use as a context manager: the groups exist inside the ``with`` and are
    removed on the way out, whatever happened.  Processes moved in with
    :meth:`place` that exit leave their group by themselves, so one set of
    groups serves every server started during the ``with``.
    """

    def __init__(self, count: int, pct: float, period_us: int = 10_000,
                 hierarchy: Hierarchy | None = None) -> None:
        self.count, self.pct, self.period_us = count, pct, period_us
        self.quota_us = round(period_us * pct / 100)
        if self.quota_us < MIN_QUOTA_US:
            raise ValueError(f"{pct} % of {period_us} µs is below the kernel's {MIN_QUOTA_US} µs minimum quota")
        self._hierarchy = hierarchy
        self.paths: list[str] = []

    @property
    def hierarchy(self) -> Hierarchy:
        if self._hierarchy is None:
            self._hierarchy = find_hierarchy()
        return self._hierarchy

    def describe(self) -> str:
        h = self.hierarchy
        return (f"{self.pct:g} % of one core per worker (cgroup v{h.version}, quota {self.quota_us} µs per "
                f"{self.period_us} µs)")

    def open(self) -> CpuGroups:
        """Create the groups and set their caps; :class:`Unavailable` (nothing left behind) if we cannot."""
        h = self.hierarchy
        remove_stale(h)
        try:
            if h.version == 2:
                self._enable_v2_cpu(h)
            for i in range(self.count):
                path = os.path.join(h.mount, f"{PREFIX}{os.getpid()}-{i}")
                os.mkdir(path)
                self.paths.append(path)
                self._set_cap(h, path)
        except OSError as exc:
            self.close()
            raise Unavailable(f"cannot create a capped group under {h.mount}: {exc}") from exc
        return self

    @staticmethod
    def _enable_v2_cpu(h: Hierarchy) -> None:
        # v2: a child group gets cpu.max only if its parent delegates "cpu" to its children.  Left on
        # afterwards: turning it off again could break whatever else started using it meanwhile.
        control = os.path.join(h.mount, "cgroup.subtree_control")
        if "cpu" not in _read(control).split():
            _write(control, "+cpu")

    def _set_cap(self, h: Hierarchy, path: str) -> None:
        got: tuple[str, ...]
        if h.version == 1:
            _write(os.path.join(path, "cpu.cfs_period_us"), str(self.period_us))
            _write(os.path.join(path, "cpu.cfs_quota_us"), str(self.quota_us))
            got = (_read(os.path.join(path, "cpu.cfs_quota_us")).strip(),
                   _read(os.path.join(path, "cpu.cfs_period_us")).strip())
        else:
            _write(os.path.join(path, "cpu.max"), f"{self.quota_us} {self.period_us}")
            got = tuple(_read(os.path.join(path, "cpu.max")).split())
        if got != (str(self.quota_us), str(self.period_us)):
            raise OSError(f"{path}: cap reads back as {got}")

    def place(self, index: int, pid: int) -> None:
        """Move ``pid`` (all its threads: ``cgroup.procs`` moves the thread group) into group ``index``."""
        h = self.hierarchy
        _write(h.procs_file(self.paths[index]), str(pid))
        now = group_of(pid, h)
        if now != self.paths[index]:
            raise RuntimeError(f"pid {pid} is in {now!r} after the move, not {self.paths[index]}")

    def members(self) -> list[list[int]]:
        """Each group's pids now."""
        out = []
        for path in self.paths:
            try:
                out.append([int(p) for p in _read(self.hierarchy.procs_file(path)).split()])
            except (OSError, ValueError):
                out.append([])
        return out

    def stats(self) -> list[dict[str, int]]:
        """Each group's ``cpu.stat`` (``nr_periods``, ``nr_throttled``, …): how often the cap bit."""
        out = []
        for path in self.paths:
            try:
                pairs = (line.split() for line in _read(os.path.join(path, "cpu.stat")).splitlines())
                out.append({k: int(v) for k, v in pairs})
            except (OSError, ValueError):
                out.append({})
        return out

    def close(self) -> list[str]:
        """Move any pid still inside back home, then remove each group; the groups that would not go."""
        left: list[str] = []
        if not self.paths:
            return left
        home = self.hierarchy.procs_file(self.hierarchy.home)
        for path in self.paths:
            for _ in range(RMDIR_TRIES):
                if not os.path.isdir(path):
                    break
                for pid in self._pids(path):
                    try:
                        _write(home, str(pid))
                    except OSError:
                        pass  # exited meanwhile
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(RMDIR_WAIT_S)
            if os.path.isdir(path):
                left.append(path)
        self.paths = []
        return left

    def _pids(self, path: str) -> list[int]:
        try:
            return [int(p) for p in _read(self.hierarchy.procs_file(path)).split()]
        except (OSError, ValueError):
            return []

    def __enter__(self) -> CpuGroups:
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
