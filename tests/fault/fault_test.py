#!/usr/bin/env python3
"""Disk faults in the middle of a checkpoint save, on file systems this test mounts itself.

  fault_test.py --primal BIN --mpirun MPIRUN --preload LIB --workdir DIR CASE

A 20-step run saves every 5 steps into checkpoint.dir on the faulty file system (its log
directory stays on the ordinary disk); the save of step 15 meets the fault. Every case checks:
  - the run fails with exit 2 on every rank and ONE line on stderr, "primal: error: ...", that
    names the file and the system's reason;
  - `latest` names step_00000010, whose shard files equal an uninterrupted run's byte for byte,
    and which loads (`primal export` reads it through `latest` and checks every CRC) to the
    same parameters;
  - where the file system is still writable, the failed save removed its temporary directory;
  - once the fault is gone (space freed, remounted read-write, mounted again), `--resume auto`
    continues from step 10, leaves no .step_*.tmp or .latest.tmp behind, and ends with the
    uninterrupted run's per-step losses and final parameters, bitwise.

CASE is one of:
  TmpfsFullDuringSave            a 1-process run on a small tmpfs that another file fills up
  TmpfsFullDuringBackgroundSave  the same with checkpoint.async_save (the background writer)
  Ext4FullDuringSaveTp2          a loop-mounted ext4 filling up under a TP=2 job (mpirun -np 2)
  RemountReadOnlyBeforeManifest  ext4 remounted read-only once the shard is written, before
                                 manifest.pb (fault_preload holds the save at that open)
  RemountReadOnlyBeforeLatest    ext4 remounted read-only after step_15 is renamed into place,
                                 before `latest` is replaced
  Ext4ShutdownMidShardWrite      FS_IOC_SHUTDOWN (no log flush, like a dead disk) on the ext4
                                 while the shard file is half written: real EIO from ext4; then
                                 unmounted and mounted again (journal replay)
  Ext4ShutdownDuringBackgroundSave
                                 the same in the background writer (checkpoint.async_save)
  PreloadEioOnRank1Tp2           EIO from the 3rd write of TP rank 1's shard (fault_preload,
                                 rank 1 only) under mpirun -np 2
  PreloadEioAtFsync              EIO from the fsync of the shard file (fault_preload)
  PreloadNoSpaceWritingLatest    ENOSPC from the write of `latest`'s temporary file, once step_15
                                 is complete and renamed into place (fault_preload)
Needs root (it mounts file systems): otherwise, or where mounts are refused, exit 77 (SKIPPED)
with the reason. Exit 0 on success, 1 on failure. Prints what it observed.
"""
import argparse
import fcntl
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checkpoint"))
from checkpoint_test import (Failed, expect_same_run, final_params, lm_config, losses,  # noqa: E402
                             read_safetensors, step_dir)

SKIP = 77
BAD_INPUT = 2
STEPS, EVERY, FAULTY_STEP, PREVIOUS_STEP = 20, 5, 15, 10
PAGE = 4096
FS_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32): ext4, xfs
SHUTDOWN_NOLOGFLUSH = 2       # EXT4_GOING_FLAGS_NOLOGFLUSH: what is not in the journal is lost

NO_SPACE, READ_ONLY, IO_ERROR = "No space left on device", "Read-only file system", "Input/output error"


class Skip(Exception):
    pass


def sh(*cmd, check=True):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and p.returncode != 0:
        raise Failed("%s exited %d: %s" % (" ".join(cmd), p.returncode, p.stdout.strip()))
    return p


# ---- File systems of the test's own, removed also when it fails or was killed before

def mounts_under(root):
    """Mount points at or under root, deepest first (from /proc/self/mountinfo)."""
    out = []
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4].encode().decode("unicode_escape")
        if point == root or point.startswith(root + "/"):
            out.append(point)
    return sorted(out, key=len, reverse=True)


def remove_stale(workdir):
    """What an earlier, killed run of this case left: its primal processes (their command
    lines name files in workdir), its mounts (lazily unmounted: a loop device mounted with
    -o loop detaches itself once unmounted) and its files."""
    stale = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open("/proc/%s/cmdline" % pid, "rb").read().decode(errors="replace")
        except OSError:
            continue
        if int(pid) != os.getpid() and workdir + "/" in cmdline:
            os.kill(int(pid), signal.SIGKILL)
            stale.append(pid)
    deadline = time.time() + 10
    while stale and time.time() < deadline:
        stale = [pid for pid in stale if os.path.exists("/proc/" + pid)]
        time.sleep(0.05)
    for point in mounts_under(workdir):
        sh("umount", "-l", point, check=False)
    shutil.rmtree(workdir, ignore_errors=True)


class FileSystems:
    """Mounts tmpfs and loop-mounted ext4 under the work directory; close() unmounts them all."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.points = []

    def tmpfs(self, name, size):
        point = os.path.join(self.workdir, name)
        os.makedirs(point)
        p = sh("mount", "-t", "tmpfs", "-o", "size=%d" % size, "tmpfs", point, check=False)
        if p.returncode != 0:
            raise Skip("mounting a tmpfs was refused: " + p.stdout.strip())
        self.points.append(point)
        return point

    def ext4(self, name, size):
        if not shutil.which("mkfs.ext4"):
            raise Skip("mkfs.ext4 (Debian's e2fsprogs) is not installed")
        point = os.path.join(self.workdir, name)
        image = point + ".img"
        os.makedirs(point)
        with open(image, "wb") as f:
            f.truncate(size)
        sh("mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", image)
        self.mount_ext4(image, point)
        return point

    def mount_ext4(self, image, point):
        p = sh("mount", "-t", "ext4", "-o", "loop", image, point, check=False)
        if p.returncode != 0:
            raise Skip("loop-mounting an ext4 image was refused: " + p.stdout.strip())
        if point not in self.points:
            self.points.append(point)

    def remount(self, point, mode):
        sh("mount", "-o", "remount," + mode, point)

    def unmount(self, point):
        sh("umount", point)
        self.points.remove(point)

    def close(self):
        for point in reversed(self.points):
            if sh("umount", point, check=False).returncode != 0:
                sh("umount", "-l", point, check=False)
        self.points = []


def free_bytes(point):
    st = os.statvfs(point)
    return st.f_bavail * st.f_frsize


def fill(point, leave):
    """Fills the file system but for `leave` bytes with one file (what another program wrote)."""
    filler = os.path.join(point, "filler")
    size = free_bytes(point) - leave
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return filler


def shutdown(point):
    """FS_IOC_SHUTDOWN: from now on every call on this file system fails with EIO."""
    fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FS_IOC_SHUTDOWN, struct.pack("I", SHUTDOWN_NOLOGFLUSH))
    finally:
        os.close(fd)


# ---- primal runs

class Runs:
    def __init__(self, args, tp=1, async_save=False):
        self.args = args
        self.tp = tp
        self.config = lm_config(args.workdir, steps=STEPS)
        self.extra = ["--set", "checkpoint.every=%d" % EVERY]
        if async_save:
            self.extra += ["--set", "checkpoint.async_save=true"]

    def command(self, run_dir, ck_root=None, resume=None):
        """primal train; under mpirun -np TP, each rank's exit status and stderr go to
        run_dir/exit.<rank> and run_dir/stderr.<rank> (mpirun adds banners of its own)."""
        cmd = [self.args.primal, "train", "--config", self.config, "--set", "logging.dir=" + run_dir,
               "--set", "parallel.tp=%d" % self.tp] + self.extra
        if ck_root:
            cmd += ["--set", "checkpoint.dir=" + ck_root]
        if resume:
            cmd += ["--resume", resume]
        if self.tp == 1:
            return cmd
        # Once one rank exits non-zero, mpirun SIGTERMs the others: the shell ignores that, so
        # that it records how its rank ended (primal installs its own SIGTERM handler).
        record = ("trap '' TERM; r=$OMPI_COMM_WORLD_RANK; \"$0\" \"$@\" 2> %s/stderr.$r; s=$?; "
                  "echo $s > %s/exit.$r; exit $s" % (run_dir, run_dir))
        return [self.args.mpirun, "-np", str(self.tp), "--oversubscribe", "/bin/sh", "-c", record] + cmd

    def start(self, run_dir, ck_root=None, resume=None, env=None):
        os.makedirs(run_dir, exist_ok=True)
        for f in os.listdir(run_dir):
            if f.startswith(("exit.", "stderr.")):
                os.remove(os.path.join(run_dir, f))
        return subprocess.Popen(self.command(run_dir, ck_root, resume), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    def train(self, run_dir, ck_root=None, resume=None, expect=0, env=None):
        proc = self.start(run_dir, ck_root, resume, env)
        out, err = proc.communicate(timeout=120)
        if expect is not None and proc.returncode != expect:
            raise Failed("primal train exited %d, expected %d\nstdout: %s\nstderr: %s"
                         % (proc.returncode, expect, out[-2000:], err[-2000:]))
        return proc.returncode, out, err

    def rank_results(self, run_dir):
        """{rank: (exit status, stderr)} as each rank's shell recorded them (None: killed)."""
        out = {}
        for r in range(self.tp if self.tp > 1 else 0):
            try:
                out[r] = (int(open(os.path.join(run_dir, "exit.%d" % r)).read()),
                          open(os.path.join(run_dir, "stderr.%d" % r)).read())
            except (OSError, ValueError):
                out[r] = (None, "")
        return out

    def export(self, checkpoint, out):
        p = subprocess.run([self.args.primal, "export", "--checkpoint", checkpoint, "--out", out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        return p.returncode, p.stderr.strip(), read_safetensors(out) if p.returncode == 0 else None


def env_with_fault(args, **settings):
    env = dict(os.environ, LD_PRELOAD=args.preload,
               PRIMAL_FAULT_LOG=os.path.join(args.workdir, "fault.log"))
    env.update({"PRIMAL_FAULT_" + k.upper(): str(v) for k, v in settings.items()})
    return env


class Paused:
    """The FIFOs through which fault_preload holds a call: wait() returns what it holds,
    release() lets it go on."""

    def __init__(self, workdir):
        self.prefix = os.path.join(workdir, "pause")
        os.mkfifo(self.prefix + ".paused")
        os.mkfifo(self.prefix + ".resume")
        # Open before the process starts: its write to .paused then never blocks.
        self.fd = os.open(self.prefix + ".paused", os.O_RDONLY | os.O_NONBLOCK)

    def wait(self, proc, timeout=60):
        deadline = time.time() + timeout
        got = b""
        while time.time() < deadline and proc.poll() is None:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                got += os.read(self.fd, 4096)
                if got.endswith(b"\n"):
                    return got.decode().strip()
        raise Failed("the save never reached the call to hold (exit %s): %s"
                     % (proc.poll(), proc.stderr.read()[-1500:] if proc.poll() is not None else ""))

    def release(self):
        try:  # the process holds .resume open for reading while it waits
            fd = os.open(self.prefix + ".resume", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise Failed("the held call no longer waits: %s" % e)
        os.write(fd, b"g")
        os.close(fd)

    def close(self):
        os.close(self.fd)


# ---- What every case checks

def temp_entries(root):
    return sorted(f for f in os.listdir(root) if f.endswith(".tmp"))


def shard_files(ck):
    return {f: open(os.path.join(ck, f), "rb").read() for f in sorted(os.listdir(ck)) if f.endswith(".bin")}


def checkpoint_bytes(ck):
    """Bytes a checkpoint occupies on a 4 KiB-block file system: its files and its directory."""
    return PAGE + sum(-(-os.path.getsize(os.path.join(ck, f)) // PAGE) * PAGE for f in os.listdir(ck))


class Case:
    def __init__(self, args, runs):
        self.args = args
        self.runs = runs
        self.failures = []
        straight = os.path.join(args.workdir, "straight")
        runs.train(straight)
        self.base_losses, self.base_params = losses(straight), final_params(straight)
        self.base_ck = step_dir(straight + "/checkpoints", PREVIOUS_STEP)
        self.base_shards = shard_files(self.base_ck)
        _, _, self.base_previous = runs.export(self.base_ck, os.path.join(args.workdir, "base.safetensors"))
        self.run_dir = os.path.join(args.workdir, "run")

    def note(self, text):
        print(text)

    def fail(self, text):
        self.failures.append(text)

    def check_failed_run(self, code, err, path, reason, ck_root, writable):
        """The failed run's exit, its one error line (returned), and what it left in ck_root."""
        ranks = self.runs.rank_results(self.run_dir)
        if ranks:  # the ranks' own stderr: rank 0 prints the error, the others nothing
            exits = {r: e for r, (e, _) in ranks.items()}
            self.note("mpirun exit %d, ranks' exits %s; mpirun's own stderr: %d lines"
                      % (code, exits, len(err.splitlines())))
            if any(e != BAD_INPUT for e in exits.values()):
                self.fail("not every rank exited %d: %s (None: killed)" % (BAD_INPUT, exits))
            for r, (_, text) in ranks.items():
                if r > 0 and text.strip():
                    self.fail("rank %d printed on stderr too:\n%s" % (r, text[-1000:]))
            err = ranks[0][1]
        lines = [l for l in err.splitlines() if l.strip()]
        self.note("exit %d; stderr: %s" % (code, " | ".join(lines)[:400]))
        if code != BAD_INPUT:
            self.fail("the run exited %d, expected %d" % (code, BAD_INPUT))
        if len(lines) != 1 or not lines[0].startswith("primal: error: ") or path not in lines[0] \
                or reason not in lines[0]:
            self.fail("expected one line 'primal: error: ...' naming %s and '%s', got:\n%s"
                      % (path, reason, err[-2000:]))
        left = temp_entries(ck_root)
        self.note("left in %s: %s; temporary: %s" % (ck_root, sorted(os.listdir(ck_root)), left or "none"))
        if writable and left:
            self.fail("the failed save left %s on a writable file system" % left)
        return lines[0] if lines else ""

    def check_previous(self, ck_root):
        """`latest` names the previous checkpoint, which is complete, unchanged and loads."""
        latest = open(os.path.join(ck_root, "latest")).read().strip()
        previous = step_dir(ck_root, PREVIOUS_STEP)
        if latest != os.path.basename(previous):
            self.fail("latest names %s, expected %s" % (latest, os.path.basename(previous)))
        if shard_files(previous) != self.base_shards:
            self.fail("the shard files of %s differ from the uninterrupted run's" % previous)
        code, err, params = self.runs.export(ck_root, os.path.join(self.args.workdir, "previous.safetensors"))
        if code != 0 or params != self.base_previous:
            self.fail("the checkpoint that latest names does not load to the saved parameters "
                      "(export exit %d: %s)" % (code, err))
        self.note("latest -> %s: shard files as saved, loads (export exit %d, %d tensors equal)"
                  % (latest, code, len(params or {})))

    def check_resume(self, ck_root):
        _, out, _ = self.runs.train(self.run_dir, ck_root, resume="auto")
        resumed = next((l for l in out.splitlines() if "resumed from" in l), "?")
        self.note("resumed: " + resumed.replace("primal train: ", ""))
        if step_dir(ck_root, PREVIOUS_STEP) not in resumed:
            self.fail("not resumed from step %d: %s" % (PREVIOUS_STEP, resumed))
        left = temp_entries(ck_root)
        if left:
            self.fail("after the resumed run %s still holds %s" % (ck_root, left))
        before = len(self.failures)
        expect_same_run(self.failures, "resumed after the fault", losses(self.run_dir),
                        final_params(self.run_dir), self.base_losses, self.base_params)
        self.note("after the restart: no temporary entries (%s); final parameters %s"
                  % (left or "none", "bitwise equal to the uninterrupted run's"
                     if len(self.failures) == before else "DIFFERENT"))


def shard_path(ck_root, tp_rank=0, tp=1):
    return "%s/.step_%08d.tmp/shard_%d_of_%d.bin" % (ck_root, FAULTY_STEP, tp_rank, tp)


# ---- The cases

def full_disk(args, fs, kind, tp=1, async_save=False):
    point = fs.tmpfs("disk", 4 << 20) if kind == "tmpfs" else fs.ext4("disk", 24 << 20)
    runs = Runs(args, tp=tp, async_save=async_save)
    case = Case(args, runs)
    ck_size = checkpoint_bytes(case.base_ck)
    half_shard = min(len(b) for b in case.base_shards.values()) // 2
    # Room for two checkpoints, `latest` and its temporary, and half a shard of the third.
    filler = fill(point, 2 * ck_size + 2 * PAGE + half_shard)
    ck_root = point + "/ck"
    case.note("%s of %d KiB, %d KiB free: a checkpoint takes %d KiB"
              % (kind, os.statvfs(point).f_blocks * os.statvfs(point).f_frsize >> 10,
                 free_bytes(point) >> 10, ck_size >> 10))
    code, _, err = runs.train(case.run_dir, ck_root, expect=None)
    case.check_failed_run(code, err, "%s/.step_%08d.tmp/shard_" % (ck_root, FAULTY_STEP), NO_SPACE,
                          ck_root, writable=True)
    case.check_previous(ck_root)
    os.remove(filler)  # space freed
    case.check_resume(ck_root)
    return case.failures


def held_save(args, fs, hold, fault, async_save=False):
    """A save held by fault_preload at `hold` (dict: path, call, at) while fault(point) changes
    the file system; returns the case, the failed run's result and the mount point."""
    point = fs.ext4("disk", 24 << 20)
    runs = Runs(args, async_save=async_save)
    case = Case(args, runs)
    ck_root = point + "/ck"
    paused = Paused(args.workdir)
    proc = runs.start(case.run_dir, ck_root, env=env_with_fault(args, pause=paused.prefix, **hold))
    try:
        held = paused.wait(proc)
        case.note("held at %s" % held)
        fault(point)
        paused.release()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        paused.close()
    return case, (proc.returncode, err), point, ck_root


def remount_read_only(args, fs, before_latest):
    if before_latest:  # the third save's `latest`: step_15 is complete and renamed into place
        hold = dict(path="/ck/.latest.tmp", call="open", at=3)
        path, expect_left = "/ck/.latest.tmp", ["step_%08d" % FAULTY_STEP]
    else:
        hold = dict(path=".step_%08d.tmp/manifest.pb" % FAULTY_STEP, call="open", at=1)
        path, expect_left = ".step_%08d.tmp/manifest.pb" % FAULTY_STEP, [".step_%08d.tmp" % FAULTY_STEP]
    case, (code, err), point, ck_root = held_save(
        args, fs, hold, lambda p: fs.remount(p, "ro"))
    case.check_failed_run(code, err, path, READ_ONLY, ck_root, writable=False)
    for name in expect_left:
        if name not in os.listdir(ck_root):
            case.fail("%s is missing after the failed save" % name)
    case.check_previous(ck_root)
    fs.remount(point, "rw")
    case.check_resume(ck_root)
    if before_latest and "step_%08d.replaced-1" % FAULTY_STEP not in os.listdir(ck_root):
        case.fail("the complete step_%d that latest did not name was not kept aside" % FAULTY_STEP)
    return case.failures


def shutdown_mid_shard(args, fs, async_save):
    hold = dict(path=".step_%08d.tmp/shard_0_of_1.bin" % FAULTY_STEP, call="write", at=3)
    case, (code, err), point, ck_root = held_save(args, fs, hold, shutdown, async_save=async_save)
    case.check_failed_run(code, err, shard_path(ck_root), IO_ERROR, ck_root, writable=False)
    fs.unmount(point)  # the disk comes back: mounted again, the journal replayed
    fs.mount_ext4(point + ".img", point)
    case.note("mounted again: %s" % sorted(os.listdir(ck_root)))
    case.check_previous(ck_root)
    case.check_resume(ck_root)
    return case.failures


def preload_fault(args, fs, call, at, error=IO_ERROR, tp=1, rank=0, latest=False):
    """fault_preload fails the `at`-th `call` on TP rank `rank`'s shard of step 15 (latest:
    on `latest`'s temporary file; every save writes it once) with EIO or ENOSPC."""
    point = fs.tmpfs("disk", 16 << 20)
    runs = Runs(args, tp=tp)
    case = Case(args, runs)
    ck_root = point + "/ck"
    path = ck_root + "/.latest.tmp" if latest else shard_path(ck_root, rank, tp)
    env = env_with_fault(args, path="/".join(path.split("/")[-2:]), call=call, at=at,
                         errno="EIO" if error == IO_ERROR else "ENOSPC",
                         **({"rank": rank} if tp > 1 else {}))
    code, _, err = runs.train(case.run_dir, ck_root, expect=None, env=env)
    log = os.path.join(args.workdir, "fault.log")
    injected = open(log).read().splitlines() if os.path.exists(log) else []
    case.note("injected: " + (injected[0] if injected else "nothing"))
    line = case.check_failed_run(code, err, path, error, ck_root, writable=True)
    if tp > 1 and "rank %d: %s" % (rank, path) not in line:
        case.fail("the error does not say that rank %d failed" % rank)
    case.check_previous(ck_root)
    case.check_resume(ck_root)  # without the preload: the disk is good again
    if latest and "step_%08d.replaced-1" % FAULTY_STEP not in os.listdir(ck_root):
        case.fail("the complete step_%d that latest did not name was not kept aside" % FAULTY_STEP)
    return case.failures


CASES = {
    "TmpfsFullDuringSave": lambda a, fs: full_disk(a, fs, "tmpfs"),
    "TmpfsFullDuringBackgroundSave": lambda a, fs: full_disk(a, fs, "tmpfs", async_save=True),
    "Ext4FullDuringSaveTp2": lambda a, fs: full_disk(a, fs, "ext4", tp=2),
    "RemountReadOnlyBeforeManifest": lambda a, fs: remount_read_only(a, fs, before_latest=False),
    "RemountReadOnlyBeforeLatest": lambda a, fs: remount_read_only(a, fs, before_latest=True),
    "Ext4ShutdownMidShardWrite": lambda a, fs: shutdown_mid_shard(a, fs, async_save=False),
    "Ext4ShutdownDuringBackgroundSave": lambda a, fs: shutdown_mid_shard(a, fs, async_save=True),
    "PreloadEioOnRank1Tp2": lambda a, fs: preload_fault(a, fs, "write", 3, tp=2, rank=1),
    "PreloadEioAtFsync": lambda a, fs: preload_fault(a, fs, "fsync", 1),
    "PreloadNoSpaceWritingLatest": lambda a, fs: preload_fault(a, fs, "write", 3, NO_SPACE, latest=True),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--primal", required=True)
    parser.add_argument("--mpirun", required=True)
    parser.add_argument("--preload", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("case", choices=sorted(CASES))
    args = parser.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    if os.geteuid() != 0:
        print("SKIPPED: needs root: it mounts its own file systems")
        return SKIP
    remove_stale(args.workdir)
    os.makedirs(args.workdir)
    start = time.time()
    fs = FileSystems(args.workdir)
    try:
        failures = CASES[args.case](args, fs)
    except Skip as e:
        print("SKIPPED: %s" % e)
        return SKIP
    except Failed as e:
        failures = [str(e)]
    finally:
        fs.close()
    for f in failures:
        print("FAIL: " + f)
    print("%s: %s in %.1f s" % (args.case, "FAILED" if failures else "passed", time.time() - start))
    if not failures:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
