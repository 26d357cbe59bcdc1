#!/usr/bin/env python3
"""A cluster of K hosts on this machine, for tests and by hand (needs root).

Each host is a Linux network namespace with one interface, eth0, on a private /24; the hosts'
veth peers sit on a bridge in a "switch" namespace of their own. Nothing routes out: traffic
goes only between these hosts and each host's loopback. Processes started on a host (through
`exec`, or by mpirun through scripts/cluster_agent.sh) also get their own UTS namespace, so
gethostname() returns the host's name, and their own mount namespace, in which /etc/hosts is
the cluster's (/etc/netns/NS/hosts). The file system is the machine's: every
directory is shared by all hosts (the checkpoint directory of a real cluster's shared FS).

    with Cluster(hosts=2) as c:                   # removed again on exit, also on an exception
        c.run(0, ["hostname"])                    # "node0"
        c.mpirun(0, c.hostfile(slots=2), ["-np", "4", "prog"])
        c.cut(1)                                  # ip link set eth0 down on node1
        c.shape(1, rate="1gbit", loss="1%")       # what node1 sends: tbf, a BPF classifier

Links: "veth" (the default) joins the hosts by veth pairs on a bridge, shaped by the kernel
(tc tbf, a BPF classifier); "relay" makes each host's eth0 a TUN device and carries the packets
between hosts in a user-space link emulator (scripts/cluster_link.cc), which can also delay
them: this project's kernels have no sch_netem, so a delay needs links="relay".

    with Cluster(hosts=2, links="relay") as c:
        c.shape_all(rate="10gbit", delay="100us")  # each way: 100 us more round trip per way

By hand:
    scripts/cluster.py up [--hosts K] [--links veth|relay]
                                        prints the hosts and the mpirun options; stays up
    scripts/cluster.py shape HOST [--rate 10gbit] [--delay 100us] [--loss 1%]
                                        shapes what HOST sends (nothing given: unshaped)
    scripts/cluster.py exec HOST CMD... runs CMD on host HOST (0..K-1)
    scripts/cluster.py down             kills every process on the hosts, removes it all
Facts this relies on: ../shared/notes/multi-host-on-one-machine.md.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "cluster_agent.sh")
LOSS_PROGRAM = os.path.join(HERE, "cluster_loss.bpf.c")  # shape(loss=...)
LINK_PROGRAM = os.path.join(HERE, "cluster_link.cc")  # links="relay"
NO_DELAY = (". A delay needs the kernel's sch_netem (tc netem), or sch_fq to pace packets by "
            "departure times a BPF program would set; this kernel (%s) has neither, and nothing "
            "else in tc holds a packet back: only a rate (tbf) and a loss (BPF) can be shaped "
            "on veth links. The link is left unshaped; Cluster(links=\"relay\") delays packets "
            "in user space")
RELAY_MTU = 65000  # TUN links have no segmentation offload: large packets keep ~1 GB/s
RELAY_QUEUE = 4 << 20  # bytes a relay link holds before it drops (a switch port's buffer)
PREFIX = "primal"  # namespace names: primal-node0.., primal-switch
SUBNET = "10.213.12"  # the /24; host i is .(i+1)


class ClusterError(RuntimeError):
    pass


def parse_rate(rate):
    """Bits per second of "10gbit", "500mbit", "100kbit"."""
    m = re.fullmatch(r"([0-9.]+)([kmg])bit", rate.lower())
    if not m:
        raise ClusterError("rate %r: a number and kbit, mbit or gbit, as \"10gbit\"" % rate)
    return float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def parse_delay(delay):
    """Nanoseconds of "100us", "1ms", "0.5ms"."""
    m = re.fullmatch(r"([0-9.]+)(us|ms)", delay.lower())
    if not m:
        raise ClusterError("delay %r: a number and us or ms, as \"100us\"" % delay)
    return round(float(m.group(1)) * {"us": 1e3, "ms": 1e6}[m.group(2)])


def parse_loss_ppm(loss):
    """Parts per million of "1%", "0.5%"."""
    if not re.fullmatch(r"[0-9.]+%", loss):
        raise ClusterError("loss %r: a percentage, as \"1%%\"" % loss)
    return round(float(loss[:-1]) * 1e4)


def _ip(*args, ns=None, check=True):
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise ClusterError("%s failed: %s" % (" ".join(cmd), p.stderr.strip()))
    return p.stdout


def namespaces():
    """This fixture's namespaces that exist now (leftovers included)."""
    out = _ip("netns", "list", check=False)
    return [l.split()[0] for l in out.splitlines() if l.startswith(PREFIX + "-")]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_all(pids, grace=5.0):
    """SIGTERM, then SIGKILL whatever is still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return


def cpu_sets(hosts):
    """Each host its own cores, as real nodes have (node i: the cores c with c mod K = i; with
    more hosts than cores, shared): otherwise every host's mpirun daemon sees the whole
    machine and binds its first rank to core 0, and ranks of different hosts spinning on one
    core wait a scheduler time slice (~24 ms) for each other."""
    cpus = os.cpu_count()
    return [",".join(str(c) for c in range(cpus) if c % hosts == i % hosts) or str(i % cpus)
            for i in range(hosts)]


class Cluster:
    def __init__(self, hosts=2, workdir=None, cpus=None, links="veth"):
        """cpus: each host's CPU list for taskset ("0,2"); default cpu_sets(hosts).
        links: "veth" or "relay" (the module's docstring)."""
        if os.geteuid() != 0:
            raise ClusterError("the cluster fixture needs root (network namespaces)")
        if links not in ("veth", "relay"):
            raise ClusterError("links=%r: \"veth\" or \"relay\"" % links)
        self.links = links
        self.k = hosts
        self.names = ["node%d" % i for i in range(hosts)]
        self.addrs = ["%s.%d" % (SUBNET, i + 1) for i in range(hosts)]
        self.ns = ["%s-%s" % (PREFIX, n) for n in self.names]
        self.switch = PREFIX + "-switch"
        self.dir = os.path.abspath(workdir or "/tmp/primal-cluster")
        self.map = os.path.join(self.dir, "hosts.map")
        self.control = os.path.join(self.dir, "link.sock")  # the relay's (links="relay")
        self.relay = None  # its process, while up
        self.cpus = list(cpus or cpu_sets(hosts))

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self):
        if namespaces():
            raise ClusterError("a cluster is already up (%s): scripts/cluster.py down removes it"
                               % " ".join(namespaces()))
        os.makedirs(self.dir, exist_ok=True)
        _ip("netns", "add", self.switch)
        _ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        _ip("link", "set", "br0", "up", ns=self.switch)
        hosts = "127.0.0.1 localhost\n" + "".join(
            "%s %s\n" % (a, n) for a, n in zip(self.addrs, self.names))
        for i, (ns, addr) in enumerate(zip(self.ns, self.addrs)):
            _ip("netns", "add", ns)
            if self.links == "veth":
                # Created inside the host's namespace, its peer moved to the switch: the names
                # never appear in the machine's own namespace.
                _ip("link", "add", "eth0", "type", "veth", "peer", "name", "port%d" % i, ns=ns)
                _ip("link", "set", "port%d" % i, "netns", self.switch, ns=ns)
                _ip("link", "set", "port%d" % i, "master", "br0", "up", ns=self.switch)
            else:
                _ip("tuntap", "add", "dev", "eth0", "mode", "tun", ns=ns)
                _ip("link", "set", "eth0", "mtu", str(RELAY_MTU), ns=ns)
            _ip("addr", "add", addr + "/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
            # A connection whose peer is gone (a cut link, a dead host) fails after ~6 s of
            # unanswered retransmissions instead of ~15 min, so that mpirun and its daemons
            # notice a lost host and end; per host, as a cluster's nodes would be tuned.
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                            "net.ipv4.tcp_retries2=4"], check=True)
            os.makedirs("/etc/netns/" + ns, exist_ok=True)
            with open("/etc/netns/%s/hosts" % ns, "w") as f:
                f.write(hosts)
        with open(self.map, "w") as f:
            for line in zip(self.names, self.addrs, self.ns, self.cpus):
                f.write(" ".join(line) + "\n")
        if self.links == "relay":
            self._start_relay()
        self._wait_links()

    def _start_relay(self):
        """The link emulator, compiled once into the workdir, running in the switch namespace
        (so that down() finds and kills it with the hosts' processes)."""
        binary = os.path.join(self.dir, "cluster_link")
        if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(LINK_PROGRAM):
            subprocess.run(["c++", "-O2", "-std=c++20", LINK_PROGRAM, "-o", binary + ".tmp"],
                           check=True)
            os.rename(binary + ".tmp", binary)
        self.relay = subprocess.Popen(
            ["ip", "netns", "exec", self.switch, binary, self.control, str(RELAY_QUEUE)]
            + ["/run/netns/" + ns for ns in self.ns], stdout=subprocess.PIPE, text=True)
        if self.relay.stdout.readline().strip() != "ready":
            raise ClusterError("the link emulator (%s) did not start" % binary)

    def _relay_request(self, message):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = "%s.%d" % (self.control, os.getpid())
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s.bind(path)
        s.settimeout(5)
        try:
            s.sendto(message.encode(), self.control)
            reply = s.recv(256).decode()
        finally:
            s.close()
            os.unlink(path)
        if reply.startswith("error"):
            raise ClusterError("the link emulator: " + reply)
        return reply

    def down(self):
        """Kills every process on every host (by PID), then removes namespaces and links."""
        present = namespaces()
        pids = []
        for ns in present:
            pids += [int(p) for p in _ip("netns", "pids", ns, check=False).split()]
        kill_all(pids)
        if self.relay:
            self.relay.wait()
            self.relay = None
        for ns in present:
            _ip("netns", "del", ns, check=False)
            subprocess.run(["rm", "-rf", "/etc/netns/" + ns])

    def _wait_links(self, timeout=10):
        """Until every host reaches every other over TCP (the bridge's ports take a moment)."""
        probe = ("import socket,sys\n"
                 "s=socket.socket(); s.settimeout(0.5)\n"
                 "sys.exit(s.connect_ex((sys.argv[1], 9)) not in (0, 111))\n")  # refused = up
        deadline = time.time() + timeout
        for i in range(self.k):
            for addr in self.addrs:
                while subprocess.run(["ip", "netns", "exec", self.ns[i], sys.executable, "-c",
                                      probe, addr]).returncode != 0:
                    if time.time() > deadline:
                        raise ClusterError("%s cannot reach %s" % (self.names[i], addr))
                    time.sleep(0.2)

    # -- running things --------------------------------------------------------------------
    def command(self, host, cmd):
        """The argv that runs cmd on host (an index) with the host's name and network."""
        return [AGENT, self.names[host]] + [shlex.join(cmd)]

    def env(self, **extra):
        """The environment for commands run on the hosts: the agent's map, and Open MPI over
        TCP on the /24 only between hosts (shared memory only among one host's ranks), for
        mpirun and for ranks that srun starts alike."""
        net = SUBNET + ".0/24"
        return dict(os.environ, PRIMAL_CLUSTER_MAP=self.map, OMPI_MCA_pml="ob1",
                    OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_btl_tcp_if_include=net,
                    OMPI_MCA_oob_tcp_if_include=net, **extra)

    def run(self, host, cmd, timeout=120, **kw):
        return subprocess.run(self.command(host, cmd), env=kw.pop("env", self.env()),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, **kw)

    def popen(self, host, cmd, **kw):
        return subprocess.Popen(self.command(host, cmd), env=kw.pop("env", self.env()), **kw)

    def hostfile(self, slots=1, hosts=None):
        path = os.path.join(self.dir, "hostfile.%d" % slots)
        with open(path, "w") as f:
            for i in hosts if hosts is not None else range(self.k):
                f.write("%s slots=%d\n" % (self.names[i], slots))
        return path

    def mpi_options(self):
        """mpirun options (with env()): remote daemons through the agent."""
        return ["--mca", "plm_rsh_agent", AGENT, "--mca", "plm_rsh_no_tree_spawn", "1",
                # Each host's processes run on the host's CPUs (the agent's taskset): mpirun's
                # daemons see the whole machine and would bind every host's rank 0 to core 0.
                "--bind-to", "none",
                # Idle daemon connections probe their peer: a daemon whose mpirun is cut off
                # (or the reverse) ends within ~5 s.
                "--mca", "oob_tcp_keepalive_time", "2", "--mca", "oob_tcp_keepalive_intvl", "1",
                "--mca", "oob_tcp_keepalive_probes", "3"]

    def mpirun_command(self, hostfile, args, mpirun="mpirun"):
        return [mpirun, "--hostfile", hostfile] + self.mpi_options() + list(args)

    def processes(self):
        """{host name: [pid, ...]}: every process running on each host now."""
        return {n: [int(p) for p in _ip("netns", "pids", ns, check=False).split()]
                for n, ns in zip(self.names, self.ns)}

    # -- faults ----------------------------------------------------------------------------
    def cut(self, host):
        _ip("link", "set", "eth0", "down", ns=self.ns[host])

    def uncut(self, host):
        _ip("link", "set", "eth0", "up", ns=self.ns[host])
        self._wait_links()

    def kill(self, pids):
        """SIGKILL, as a host that loses power or the OOM killer would."""
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def shape(self, host, rate=None, delay=None, loss=None):
        """Shapes host's outgoing traffic to exactly this (nothing given: unshaped; shape
        every host for both directions): a rate ("1gbit"), a delay ("100us") and a loss ("1%").
        On relay links the link emulator does all three. On veth links a rate is a token
        bucket on its eth0 (tbf, the root qdisc), a loss a BPF classifier where its packets
        enter the switch (scripts/cluster_loss.bpf.c, built with clang), a delay tc netem (the
        root, the bucket under it) where the kernel has sch_netem; without it (this project's
        machines) a delay is refused, the link left unshaped."""
        if self.links == "relay":
            self._relay_request("%d %.0f %d %d" % (
                host, parse_rate(rate) if rate else 0, parse_delay(delay) if delay else 0,
                parse_loss_ppm(loss) if loss else 0))
            return
        tc = ["ip", "netns", "exec", self.ns[host], "tc"]
        port = ["tc", "-n", self.switch]
        # What an earlier call set, if anything.
        subprocess.run(tc + ["qdisc", "del", "dev", "eth0", "root"], stderr=subprocess.DEVNULL)
        subprocess.run(port + ["qdisc", "del", "dev", "port%d" % host, "clsact"],
                       stderr=subprocess.DEVNULL)
        # With a loss, one packet a frame: a drop is one lost frame, not a 64 KB GSO burst.
        _ip("link", "set", "eth0", "gso_max_segs", "1" if loss else "65535", ns=self.ns[host])
        parent = ["root", "handle", "1:"]
        if delay:
            p = subprocess.run(tc + ["qdisc", "add", "dev", "eth0"] + parent + [
                "netem", "limit", "100000", "delay", delay], stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                why = NO_DELAY % os.uname().release if "unknown" in p.stderr.lower() else ""
                raise ClusterError("shape(delay=%s) on %s: tc netem: %s%s" % (
                    delay, self.names[host], p.stderr.strip().rstrip("."), why))
            parent = ["parent", "1:1", "handle", "10:"]
        if rate:
            # A burst that covers a few timer ticks at the rate.
            burst = max(int(parse_rate(rate) / 8 * 0.004), 65536)
            subprocess.run(tc + ["qdisc", "add", "dev", "eth0"] + parent + [
                "tbf", "rate", rate, "burst", str(burst), "latency", "50ms"], check=True)
        if loss:
            # On the wire, where host's packets enter the switch (its port's ingress): the
            # sender does not see the drop. Dropped on its own eth0, a packet's send would fail
            # and TCP send it again at once.
            subprocess.run(port + ["qdisc", "add", "dev", "port%d" % host, "clsact"], check=True)
            subprocess.run(port + ["filter", "add", "dev", "port%d" % host, "ingress", "bpf",
                                   "direct-action", "obj", self._loss_program(loss), "sec",
                                   "classifier"], check=True)

    def _loss_program(self, loss):
        """The BPF object that drops `loss` ("1%", "0.5%") of the packets: compiled once per
        rate into the workdir."""
        ppm = parse_loss_ppm(loss)
        obj = os.path.join(self.dir, "loss-%d.o" % ppm)
        if not os.path.exists(obj):
            if not shutil.which("clang"):
                raise ClusterError("shape(loss=...) compiles a BPF program: needs clang")
            subprocess.run(["clang", "-O2", "-target", "bpf", "-DLOSS_PPM=%d" % ppm, "-c",
                            LOSS_PROGRAM, "-o", obj + ".tmp"], check=True)
            os.rename(obj + ".tmp", obj)
        return obj

    def link_stats(self, host):
        """Counters of host's outgoing link: the packets sent and dropped (on veth links the
        loss classifier's, zeros while no loss is shaped; on relay links the emulator's, its
        queue's drops included), and the TCP segments the host retransmitted
        ("retransmitted", /proc/net/snmp in the host's namespace)."""
        tcp = [l.split() for l in subprocess.run(
            ["ip", "netns", "exec", self.ns[host], "cat", "/proc/net/snmp"],
            stdout=subprocess.PIPE, text=True).stdout.splitlines() if l.startswith("Tcp:")]
        retransmitted = int(dict(zip(*tcp))["RetransSegs"])
        if self.links == "relay":
            sent, dropped = (int(v) for v in self._relay_request("stats %d" % host).split())
            return {"sent": sent, "dropped": dropped, "retransmitted": retransmitted}
        m = re.search(r"qdisc clsact .*?\n\s*Sent \d+ bytes (\d+) pkt \(dropped (\d+)",
                      subprocess.run(["tc", "-n", self.switch, "-s", "qdisc", "show", "dev",
                                      "port%d" % host], stdout=subprocess.PIPE, text=True).stdout)
        return {"sent": int(m.group(1)) if m else 0, "dropped": int(m.group(2)) if m else 0,
                "retransmitted": retransmitted}

    def shape_all(self, **kw):
        for i in range(self.k):
            self.shape(i, **kw)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--workdir", default="/tmp/primal-cluster")
    up.add_argument("--links", choices=["veth", "relay"], default="veth")
    sh = sub.add_parser("shape")
    sh.add_argument("host", type=int)
    sh.add_argument("--rate")
    sh.add_argument("--delay")
    sh.add_argument("--loss")
    sh.add_argument("--workdir", default="/tmp/primal-cluster")
    ex = sub.add_parser("exec")
    ex.add_argument("host", type=int)
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.add_argument("--workdir", default="/tmp/primal-cluster")
    sub.add_parser("down")
    args = parser.parse_args()
    if args.cmd == "down":
        Cluster(0).down()
        return 0
    if args.cmd == "up":
        c = Cluster(args.hosts, args.workdir, links=args.links)
        c.__enter__()
        with open(os.path.join(c.dir, "links"), "w") as f:
            f.write(args.links)
        for n, a, ns, cpus in zip(c.names, c.addrs, c.ns, c.cpus):
            print("%s %s (namespace %s, CPUs %s)" % (n, a, ns, cpus))
        for k, v in sorted(c.env().items()):
            if k.startswith(("PRIMAL_CLUSTER", "OMPI_MCA")):
                print("export %s=%s" % (k, v))
        print("mpirun (run it on node0: scripts/cluster.py exec 0 mpirun ...) options:\n  "
              + shlex.join(["--hostfile", c.hostfile()] + c.mpi_options()))
        return 0
    names = open(os.path.join(args.workdir, "hosts.map")).read().split()
    k = len(names) // 4
    c = Cluster(k, args.workdir, links=open(os.path.join(args.workdir, "links")).read())
    if args.cmd == "shape":
        c.shape(args.host, rate=args.rate, delay=args.delay, loss=args.loss)
        return 0
    return subprocess.run(c.command(args.host, args.argv), env=c.env()).returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClusterError as e:
        print("cluster.py: error: %s" % e, file=sys.stderr)
        sys.exit(2)
