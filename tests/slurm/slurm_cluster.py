"""A real Slurm on localhost for tests: munged, slurmctld and slurmd started by hand with their
own configuration in a temporary directory, and stopped by the PIDs in their pidfiles.

    with SlurmCluster(workdir) as slurm:
        job = slurm.sbatch(script_path, extra_args)
        slurm.wait_state(job, {"COMPLETED"})

With hosts= a scripts/cluster.py Cluster: slurmctld on its node0, one slurmd per host
(NodeName = the host's name, NodeAddr = its address, its own spool directory), client
commands run on node0.

Facts this relies on: ../shared/notes/slurm-and-mpi-on-one-machine.md.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts"))
from cluster import alive, kill_all  # noqa: E402


class SlurmError(RuntimeError):
    pass


def _run(cmd, env=None, check=True, timeout=60):
    """Runs cmd; returns its stdout (stderr only goes into the error message)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise SlurmError("%s failed (%d): %s %s" % (" ".join(cmd), p.returncode,
                                                    p.stdout.strip(), p.stderr.strip()))
    return p.stdout


def ensure_installed():
    """Installs slurm-wlm and munge from Debian when missing (the test needs root)."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env, timeout=600)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"],
         env=env, timeout=900)


class SlurmCluster:
    def __init__(self, workdir, cpus=None, hosts=None, conf=None):
        """conf: slurm.conf settings ({"SlurmdTimeout": 5}) that replace or add to ours."""
        self.dir = os.path.abspath(workdir)
        self.hosts = hosts
        self.extra_conf = dict(conf or {})
        self.nodes = (list(zip(hosts.names, hosts.addrs)) if hosts else
                      [(socket.gethostname(), "127.0.0.1")])
        self.host = self.nodes[0][0]
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = dict(hosts.env() if hosts else os.environ, SLURM_CONF=self.conf)
        self.pids = {}  # daemon -> pid we started
        self.cpus = cpus

    def _on(self, i, cmd):
        """cmd as run on node i (on this machine without hosts)."""
        return self.hosts.command(i, cmd) if self.hosts else cmd

    def _client(self, cmd):
        return self._on(0, cmd)

    def _spool(self, i):
        """Node i's own spool directory (logs and pidfile inside). On a cluster of hosts every
        slurmd sees its own at the one SlurmdSpoolDir path (and its own PMIx directory),
        bind-mounted in its mount namespace."""
        return os.path.join(self.dir, "spool" if not self.hosts else "spool-" + self.nodes[i][0])

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        ensure_installed()
        for sub in ("state", "spool", "log", "pmix"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self._start_munge()
        self._write_conf()
        self._start_daemon("slurmctld", self._client(["/usr/sbin/slurmctld", "-f", self.conf]),
                           os.path.join(self.dir, "slurmctld.pid"))
        for i in range(len(self.nodes)):
            self.start_slurmd(i)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = _run(self._client(["sinfo", "-h", "-N", "-o", "%T"]), env=self.env,
                       check=False).split()
            if len(out) == len(self.nodes) and all(
                    st in ("idle", "mixed", "allocated") for st in out):
                return
            time.sleep(0.5)
        raise SlurmError("the nodes did not become idle (sinfo: %s)" % " ".join(out) + self.logs())

    def stop(self):
        """Cancels every job, stops what we started by PID, and waits until it is gone."""
        if self.pids.get("slurmctld"):
            _run(self._client(["scancel", "--full", "--user=root"]), env=self.env, check=False)
            deadline = time.time() + 30
            while time.time() < deadline and _run(self._client(["squeue", "-h"]), env=self.env,
                                                  check=False).strip():
                time.sleep(0.5)
        # One after the other: the slurmds before the controller they report to.
        for name in ["slurmd " + n for n, _ in self.nodes] + ["slurmctld", "munged"]:
            pid = self.pids.pop(name, None)
            # Still the daemon we started: a test that kills a host kills its slurmd too,
            # and its PID may be another process's by now.
            if pid is not None and pid in _pids_named(name.split()[0]):
                kill_all([pid], grace=20)
        # Job steps left behind by a failed test.
        for pid in _pids_named("slurmstepd"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def start_slurmd(self, i):
        """Starts node i's slurmd (again, after its host was killed: as an operator would
        after the node's reboot)."""
        os.makedirs(self._spool(i), exist_ok=True)
        cmd = ["/usr/sbin/slurmd", "-f", self.conf]
        if self.hosts:
            # Node-local directories at the paths of the one slurm.conf and mpi.conf.
            pmix = os.path.join(self._spool(i), "pmix")
            os.makedirs(pmix, exist_ok=True)
            cmd = ["sh", "-c", "mount --bind %s %s && mount --bind %s %s && exec %s" % (
                self._spool(i), os.path.join(self.dir, "spool"), pmix,
                os.path.join(self.dir, "pmix"), " ".join(cmd))]
        pidfile = os.path.join(self._spool(i), "slurmd.pid")
        if os.path.exists(pidfile):
            os.remove(pidfile)  # a killed slurmd's
        self._start_daemon("slurmd " + self.nodes[i][0], self._on(i, cmd), pidfile)

    def _start_munge(self):
        existing = _pids_named("munged")
        if existing:
            return  # a munged of the machine's own: use it, and leave it running
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
        # The daemon's own pidfile: the process runuser started forks and exits.
        self._read_pidfile("munged", "/run/munge/munged.pid")
        if "munged" in self.pids:
            return
        raise SlurmError("munged did not start")

    def _start_daemon(self, name, cmd, pidfile):
        _run(cmd, env=self.env)
        self._read_pidfile(name, pidfile)
        if name not in self.pids:
            raise SlurmError(name + " did not write its pidfile" + self.logs())

    def _read_pidfile(self, name, pidfile, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                pid = int(open(pidfile).read().strip())
                if alive(pid):
                    self.pids[name] = pid
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)

    def _write_conf(self):
        node = _run(["/usr/sbin/slurmd", "-C"]).splitlines()[0]
        if self.cpus:
            node = re.sub(r"CPUs=\d+", "CPUs=%d" % self.cpus, node)
        nodes = [re.sub(r"^NodeName=\S+", "NodeName=%s NodeAddr=%s" % n, node)
                 for n in self.nodes]
        d = self.dir
        lines = [
            "ClusterName=primaltest",
            "SlurmctldHost=%s(%s)" % self.nodes[0],
            "SlurmUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=pmix",
            "ReturnToService=2",
            "JobRequeue=1",
            "StateSaveLocation=%s/state" % d,
            "SlurmdSpoolDir=%s/spool" % d,
            "SlurmctldPidFile=%s/slurmctld.pid" % d,
            "SlurmdPidFile=%s/spool/slurmd.pid" % d,
            "SlurmctldLogFile=%s/log/slurmctld.log" % d,
            "SlurmdLogFile=%s/spool/slurmd.log" % d,
            "MailProg=/bin/true",
            # Requeued jobs run again after about 15 s instead of 2 minutes.
            "AuthInfo=cred_expire=10",
            "SchedulerParameters=sched_interval=5,bf_interval=5",
            "SlurmdParameters=config_overrides",
        ]
        lines = [l for l in lines if l.split("=")[0] not in self.extra_conf] + [
            "%s=%s" % kv for kv in self.extra_conf.items()] + nodes + [
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        # PMIx's per-step directories under our own directory: job ids restart at 1 with a fresh
        # state directory, and a /tmp/spmix_appdir_<uid>_<job>.<step> left by an earlier
        # cluster would make the step fail to launch.
        with open(os.path.join(d, "mpi.conf"), "w") as f:
            f.write("PMIxCliTmpDirBase=%s/pmix\n" % d)

    # -- jobs ------------------------------------------------------------------------------
    def sbatch(self, script, options=(), script_args=(), env=None):
        """Submits `sbatch OPTIONS SCRIPT SCRIPT_ARGS`; returns the job id."""
        out = _run(self._client(["sbatch", "--parsable"] + list(options) + [script] +
                                list(script_args)), env=dict(self.env, **(env or {})))
        return out.strip().split(";")[0]

    def state(self, job, nodes=False):
        """(state, restarts) of the job; with nodes, (state, restarts, its NodeList)."""
        out = _run(self._client(["scontrol", "show", "job", job]), env=self.env, check=False)
        m = re.search(r"JobState=(\S+)", out)
        restarts = re.search(r"Restarts=(\d+)", out)
        node_list = re.search(r" NodeList=(\S+)", out)
        state = (m.group(1) if m else "UNKNOWN"), int(restarts.group(1)) if restarts else 0
        return state + (node_list.group(1) if node_list else "",) if nodes else state

    def wait_state(self, job, states, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, _ = self.state(job)
            if st in states:
                return st
            time.sleep(0.5)
        raise SlurmError("job %s not in %s after %d s (now %s)%s" % (job, states, timeout,
                                                                     self.state(job), self.logs()))

    def node_state(self, i):
        """Node i's state with its flags, as scontrol shows it ("IDLE", "DOWN+NOT_RESPONDING")."""
        out = _run(self._client(["scontrol", "show", "node", self.nodes[i][0]]), env=self.env,
                   check=False)
        m = re.search(r"State=(\S+)", out)
        return m.group(1) if m else "UNKNOWN"

    def signal(self, job, sig="USR1", batch=True):
        _run(self._client(["scancel", "--signal=" + sig] + (["--batch"] if batch else ["--full"]) +
                          [job]), env=self.env)

    def logs(self):
        text = ""
        logs = [os.path.join(self.dir, "log", "slurmctld.log")] + [
            os.path.join(self._spool(i), "slurmd.log") for i in range(len(self.nodes))]
        for p in logs:
            name = os.path.relpath(p, self.dir)
            if os.path.exists(p):
                text += "\n--- %s (tail)\n" % name + "".join(open(p).readlines()[-15:])
        return text


def _pids_named(name):
    """The live processes of that name. Zombies are left out: a daemon that an earlier test
    stopped stays one until init reaps it, which here can take seconds, and a dead munged
    taken for a running one left every slurmd unable to authenticate."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    comm, _, state = f.read().rpartition(") ")
                if comm.split(" (", 1)[1] == name and not state.startswith("Z"):
                    pids.append(int(pid))
            except (OSError, IndexError):
                pass
    return pids
