"""Small helpers used by every stage: atomic writes, temp cleanup, locks, content hashes.

Every temporary file or folder is named `.<final name>.<host>-<pid>.<random>.tmp`, so a cleanup can
tell a live writer's temp from the leftover of a killed one (`clean_stale_temps`), and artifacts get
the permissions of the user's umask (mkstemp alone would make them 0600).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from .errors import DiffzooError

HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
TEMP_RE = re.compile(r"\A\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[a-z0-9_]+\.tmp\Z")


def umask() -> int:
    """The process's umask (os.umask can only be read by setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.{HOST}-{os.getpid()}."


def _writer_alive(host: str, pid: int) -> bool:
    if host != HOST:
        return True  # another machine's writer: it cannot be asked, so its temp is left alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temps in `directory` (of the artifact `name`, or all) whose writer process is gone:
    leftovers of a killed run. A live writer's temp, this process's own and another host's are kept."""
    directory, removed = Path(directory), []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        m = TEMP_RE.match(entry.name)
        if not m or (name is not None and m["name"] != name):
            continue
        if (m["host"], int(m["pid"])) == (HOST, os.getpid()) or _writer_alive(m["host"], int(m["pid"])):
            continue
        remove_tree(entry)
        removed.append(entry)
    return removed


def kill_point(point: str) -> None:
    """Test hook for the reliability suite: with DIFFZOO_KILL_AT=<point>:<n> in the environment the
    process kills itself with SIGKILL the n-th time it passes `point` (deterministic kill -9)."""
    spec = os.environ.get("DIFFZOO_KILL_AT")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name == point:
        _KILL_COUNTS[point] = _KILL_COUNTS.get(point, 0) + 1
        if _KILL_COUNTS[point] == int(n or 1):
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


_KILL_COUNTS: dict[str, int] = {}


@contextlib.contextmanager
def atomic_path(final: str | Path):
    """Yield a temporary path beside `final`; on success it is renamed to `final` (os.replace, atomic
    on one file system), on any error it is removed. Readers never see a half-written artifact."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final.parent, final.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent)
    except OSError as err:  # a read-only folder: name the artifact, not a temporary name
        raise OSError(err.errno, err.strerror, str(final)) from None
    os.fchmod(fd, 0o666 & ~umask())
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        kill_point("write")
        os.replace(tmp, final)
    except OSError as err:
        if err.filename in (None, str(tmp), tmp):  # a full disk ("File too large", "No space left"): which file
            raise OSError(err.errno, err.strerror or describe(err), str(final)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_tree(path: str | Path) -> None:
    """Remove a file, a folder or a symbolic link (only the link: an output that Snakemake's cache
    restored is a link into the cache, whose content must stay); nothing if absent."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Like atomic_path for a directory: build it under a temporary name, then swap it in."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        kill_point("write")
        remove_tree(final)
        os.replace(tmp, final)
    finally:
        remove_tree(tmp)


def write_json(path: str | Path, obj, sort_keys: bool = True) -> None:
    """JSON written atomically (see atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=sort_keys) + "\n")


def sha256_file(path: str | Path, h=None) -> str:
    """sha256 of a file's bytes (hex); with `h` given, feed that hash object and return its digest."""
    h = hashlib.sha256() if h is None else h
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def content_hash(obj) -> str:
    """Short sha256 of a JSON-serialisable object with sorted keys (identity of a params slice)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


PACKAGE = Path(__file__).resolve().parent


def cache_dir(kind: str) -> Path:
    """diffzoo's cache of `kind` (evaluate, checkpoints): $DIFFZOO_CACHE/<kind>, else
    $XDG_CACHE_HOME/diffzoo/<kind> (~/.cache/diffzoo/<kind>)."""
    base = os.environ.get("DIFFZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffzoo"
    return Path(base) / kind


def set_aside(path: str | Path, aside_dir: str | Path, why: str) -> Path:
    """Move `path` into `aside_dir` under a timestamped name (never delete what may be the user's
    work), say so on stderr, and return where it went."""
    path, aside_dir = Path(path), Path(aside_dir)
    aside_dir.mkdir(parents=True, exist_ok=True)
    dest = aside_dir / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    k = 1
    while dest.exists():
        k += 1
        dest = aside_dir / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{k}"
    os.replace(path, dest)
    print(f"warning: {path}: {why}; moved to {dest}", file=sys.stderr)
    return dest


@contextlib.contextmanager
def reading(path: str | Path, what: str):
    """Turn the failure to read `path` (truncated, corrupt, not the format, unreadable) into one
    DiffzooError naming the file and what is wrong."""
    try:
        yield
    except DiffzooError:
        raise
    except Exception as err:  # zip, pickle, safetensors, numpy, torch's stream reader: all one message
        raise DiffzooError(f"{path}: not a readable {what} ({describe(err)})") from err


def describe(err: BaseException) -> str:
    """An exception in one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


LOCK_ENV = "DIFFZOO_LOCK_HELD"


@contextlib.contextmanager
def stage_lock(name: str, directory: str | Path = Path(".diffzoo") / "locks"):
    """An advisory lock (flock) for one stage of one experiment: a second writer gets one line naming
    the holder. The lock goes with the process (kill -9 frees it); it passes into torchrun through an
    inherited descriptor, and the ranks it starts see LOCK_ENV and take no lock of their own (under a
    torchrun started by hand, rank 0 takes it for the job)."""
    if os.environ.get(LOCK_ENV) == name or int(os.environ.get("RANK", "0")) > 0:
        yield  # held by the launcher, or by rank 0 of this torchrun job
        return
    path = Path(directory) / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, mine = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:  # a lock file another user made: flock works on a read-only descriptor too
        try:
            fd, mine = os.open(path, os.O_RDONLY), False
        except FileNotFoundError:
            raise DiffzooError(f"{path.parent}: cannot write there (permission denied), so the stage lock "
                               f"{path.name} cannot be made: nothing was computed") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise DiffzooError(f"{name} is already running ({holder}; lock {path}): wait for it, or stop it") from None
    if mine:  # who holds it, for the next one's message
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
    os.set_inheritable(fd, True)
    os.environ[LOCK_ENV] = name
    try:
        yield
    finally:
        os.environ.pop(LOCK_ENV, None)
        os.close(fd)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


TIMES_DIR = Path("logs/benchmarks")
TIME_COLUMNS = ["s", "h:m:s", "max_rss", "cpu_time", "gpu_max_mb", "started", "host", "status"]


@contextlib.contextmanager
def time_record(name: str, t0: float | None = None):
    """Append a row to logs/benchmarks/<name>.tsv when the block ends: wall seconds since t0 (the
    process start, so a stage's imports count, as in Snakemake's benchmark), peak resident MB and
    CPU seconds (this process and its workers), the GPU's peak allocated MB, the start, the host, and
    ok/failed. Snakemake's `benchmark:` columns by name (s, h:m:s, max_rss, cpu_time), written by the
    stage itself because Snakemake refuses `benchmark:` on rules eligible for its output cache, which
    every pipeline rule is, and DVC has none: one record for both engines. Rank 0 only."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    import resource

    t0 = time.perf_counter() if t0 is None else t0
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - (time.perf_counter() - t0)))
    status = "failed"
    try:
        yield
        status = "ok"
    finally:
        wall = time.perf_counter() - t0
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        torch = sys.modules.get("torch")
        gpu = (torch.cuda.max_memory_allocated() / 2**20
               if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized() else 0.0)
        row = [f"{wall:.3f}", _clock(wall),
               f"{max(u.ru_maxrss for u in usage) / 1024:.1f}",  # KiB on Linux
               f"{sum(u.ru_utime + u.ru_stime for u in usage):.2f}", f"{gpu:.1f}", started, socket.gethostname(),
               status]
        path = TIMES_DIR / f"{name}.tsv"
        with contextlib.suppress(OSError):  # a record, never the reason a finished stage fails
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                if f.tell() == 0:
                    f.write("\t".join(TIME_COLUMNS) + "\n")
                f.write("\t".join(row) + "\n")


class Progress:
    """A stage's progress, for a person: tqdm's bar on a terminal; without one (a log file, sbatch)
    a timestamped line every `every` seconds ($DIFFZOO_PROGRESS_EVERY, default 30) and at the end:
    `12:00:05 sample a: 12/48 parts (25%), 3.10 parts/s, elapsed 0:00:04, ETA 0:00:12`.
    `note(text)` writes one timestamped line either way (the train loop's line every log_every)."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, every: float | None = None,
                 enabled: bool = True, stream=None):
        self.total, self.desc, self.unit, self.done, self.enabled = total, desc, unit, initial, enabled
        self.start_count, self.t0 = initial, time.perf_counter()
        self.every = float(os.environ.get("DIFFZOO_PROGRESS_EVERY", 30)) if every is None else every
        self.stream = stream or sys.stderr
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream)
        self.last_line = self.t0
        if enabled and not self.bar:
            self._line(f"{self.done}/{self.total} {unit} to do" if initial == 0 else
                       f"{self.done}/{self.total} {unit} done before, resuming")

    def rate(self) -> float:
        return (self.done - self.start_count) / max(time.perf_counter() - self.t0, 1e-9)

    def eta(self) -> str:
        rate = self.rate()
        return _clock((self.total - self.done) / rate) if rate > 0 else "?"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.every and self.done < self.total:
            self._status()

    def _status(self) -> None:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self._line(f"{self.done}/{self.total} {self.unit} ({pct:.0f}%), {self.rate():.3g} {self.unit}/s, "
                   f"elapsed {_clock(time.perf_counter() - self.t0)}, ETA {self.eta()}")

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"{self.desc}: {text}", file=self.stream)
        else:
            self._line(text)

    def _line(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.desc}: {text}", file=self.stream, flush=True)
        self.last_line = time.perf_counter()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._status()
