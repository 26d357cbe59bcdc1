// A link emulator for the test cluster (scripts/cluster.py, Cluster(links="relay")): the
// hosts' eth0 are TUN devices, and this process carries every IP packet between them, after a
// delay, at a rate, with a loss, as set per sending host. It exists because this project's
// kernels have no sch_netem, and nothing else in tc can hold a packet back (mahimahi's
// DelayShell works the same way, for one host).
//
//   cluster_link CONTROL_SOCKET QUEUE_BYTES NETNS_PATH...
//
// Host i is the i-th namespace (/run/netns/NAME), its address SUBNET.(i+1): a packet goes to
// the host named by the last byte of its IPv4 destination. Per sending host, a packet leaves
// when the link has serialised the ones before it (rate), arrives `delay` later, and is
// dropped with probability `loss` (a fixed-seed generator: the same packets of a run, not the
// same run); a link holding more than QUEUE_BYTES (queued and in flight) drops what comes (a
// switch port's buffer). The control socket (a UNIX datagram socket) takes
// "HOST RATE_BPS DELAY_NS LOSS_PPM" and answers "ok" or the error; "stats HOST" answers "SENT
// DROPPED". It prints "ready" on stdout once every TUN is open, and runs until SIGTERM.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr size_t kMaxPacket = 65536;
// A timer wakes the process late, by 50-150 us under a hypervisor whose idle vCPU must be
// woken: the timer is set early by the lateness seen so far (a running mean), and packets due
// within kSlackNs of a wake-up go out with it. Spinning out the rest would take a core from
// the hosts (2 cores, each host on one).
constexpr int64_t kSlackNs = 10000;

int64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "cluster_link: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct Packet {
  int64_t arrival_ns;
  int to;
  std::vector<char> bytes;
};

// What one host sends: its shaping, its queue (in order of arrival), and its counters.
struct Link {
  int tun = -1;
  double rate_bytes_per_ns = 0;  // 0: no rate limit
  int64_t delay_ns = 0;
  uint32_t loss_ppm = 0;
  int64_t line_free_ns = 0;  // when the last packet queued has been serialised
  size_t queued_bytes = 0;
  std::deque<Packet> queue;
  std::vector<std::vector<char>> spare;  // buffers of delivered packets, reused
  std::mt19937 loss_draw{12345};
  uint64_t sent = 0, dropped = 0;
};

int open_tun(const char* netns_path) {
  const int ns = open(netns_path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) die(std::string("open ") + netns_path);
  if (setns(ns, CLONE_NEWNET) != 0) die(std::string("setns ") + netns_path);
  close(ns);
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) die(std::string("TUNSETIFF eth0 in ") + netns_path);
  return fd;
}

volatile std::sig_atomic_t stop = 0;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || std::atoll(argv[2]) <= 0) {
    std::fprintf(stderr, "usage: cluster_link CONTROL_SOCKET QUEUE_BYTES NETNS_PATH...\n");
    return 2;
  }
  const size_t queue_limit = size_t(std::atoll(argv[2]));
  // Timers fire when asked, not up to 50 us later: the delays set are 10-500 us.
  prctl(PR_SET_TIMERSLACK, 1UL);
  std::signal(SIGTERM, [](int) { stop = 1; });
  std::signal(SIGINT, [](int) { stop = 1; });

  // The control socket in the machine's namespace, before entering the hosts'.
  const int control = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, argv[1], sizeof(addr.sun_path) - 1);
  unlink(argv[1]);
  if (bind(control, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) die("bind control");

  // Each TUN is opened inside its host's namespace; the process then goes back to its own
  // (the cluster's switch namespace), where the fixture finds it to kill it.
  const int hosts = argc - 3;
  std::vector<Link> links(hosts);
  const int own_namespace = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (own_namespace < 0) die("open /proc/self/ns/net");
  for (int i = 0; i < hosts; ++i) links[i].tun = open_tun(argv[3 + i]);
  if (setns(own_namespace, CLONE_NEWNET) != 0) die("setns back");
  close(own_namespace);

  const int ep = epoll_create1(EPOLL_CLOEXEC);
  const int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  auto watch = [&](int fd, int tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = uint32_t(tag);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
  };
  for (int i = 0; i < hosts; ++i) watch(links[i].tun, i);
  watch(control, hosts);
  watch(timer, hosts + 1);
  std::printf("ready\n");
  std::fflush(stdout);

  std::vector<char> buffer(kMaxPacket);
  int64_t armed_ns = 0, lateness_ns = 0;
  while (!stop) {
    // Deliver what has arrived; arm the timer for the earliest packet still on its way.
    const int64_t now = now_ns();
    int64_t next = INT64_MAX;
    for (Link& link : links) {
      while (!link.queue.empty() && link.queue.front().arrival_ns <= now + kSlackNs) {
        Packet& p = link.queue.front();
        // A host whose link is down (a cut) or whose queue is full loses the packet.
        if (write(links[p.to].tun, p.bytes.data(), p.bytes.size()) < 0) ++link.dropped;
        link.queued_bytes -= p.bytes.size();
        link.spare.push_back(std::move(p.bytes));
        link.queue.pop_front();
      }
      if (!link.queue.empty()) next = std::min(next, link.queue.front().arrival_ns);
    }
    if (next != INT64_MAX) {
      armed_ns = std::max(now + 1, next - lateness_ns);
      itimerspec at{};
      at.it_value.tv_sec = armed_ns / 1000000000;
      at.it_value.tv_nsec = armed_ns % 1000000000;
      timerfd_settime(timer, TFD_TIMER_ABSTIME, &at, nullptr);
    }
    epoll_event events[16];
    const int n = epoll_wait(ep, events, 16, next == INT64_MAX ? 100 : -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int e = 0; e < std::max(n, 0); ++e) {
      const int tag = int(events[e].data.u32);
      if (tag == hosts + 1) {
        uint64_t expirations;
        if (read(timer, &expirations, sizeof(expirations)) > 0) {
          lateness_ns += (std::min<int64_t>(now_ns() - armed_ns, 1000000) - lateness_ns) / 8;
        }
      } else if (tag == hosts) {
        sockaddr_un from{};
        socklen_t from_len = sizeof(from);
        const ssize_t len = recvfrom(control, buffer.data(), buffer.size() - 1, 0,
                                     reinterpret_cast<sockaddr*>(&from), &from_len);
        if (len <= 0) continue;
        buffer[len] = 0;
        char reply[128] = "ok";
        int host;
        double rate_bps;
        long long delay_ns;
        unsigned loss_ppm;
        if (std::sscanf(buffer.data(), "stats %d", &host) == 1 && host >= 0 && host < hosts) {
          std::snprintf(reply, sizeof(reply), "%llu %llu", (unsigned long long)links[host].sent,
                        (unsigned long long)links[host].dropped);
        } else if (std::sscanf(buffer.data(), "%d %lf %lld %u", &host, &rate_bps, &delay_ns,
                               &loss_ppm) == 4 &&
                   host >= 0 && host < hosts && rate_bps >= 0 && delay_ns >= 0 &&
                   loss_ppm <= 1000000) {
          Link& link = links[host];
          link.rate_bytes_per_ns = rate_bps / 8e9;
          link.delay_ns = delay_ns;
          link.loss_ppm = loss_ppm;
        } else {
          std::snprintf(reply, sizeof(reply), "error: cannot parse '%.80s'", buffer.data());
        }
        sendto(control, reply, std::strlen(reply), 0, reinterpret_cast<sockaddr*>(&from), from_len);
      } else {
        Link& link = links[tag];
        for (;;) {
          const ssize_t len = read(link.tun, buffer.data(), buffer.size());
          if (len < 0) break;  // EAGAIN: all read; EIO: the link is down
          const int64_t at = now_ns();
          if (len < 20 || (buffer[0] >> 4) != 4) continue;  // IPv4 only (no IPv6 here)
          const int to = int(uint8_t(buffer[19])) - 1;
          if (to < 0 || to >= hosts || to == tag) continue;
          ++link.sent;
          if (link.loss_ppm && link.loss_draw() % 1000000 < link.loss_ppm) {
            ++link.dropped;
            continue;
          }
          if (link.queued_bytes + size_t(len) > queue_limit) {
            ++link.dropped;
            continue;
          }
          const int64_t start = std::max(at, link.line_free_ns);
          link.line_free_ns =
              link.rate_bytes_per_ns > 0 ? start + int64_t(len / link.rate_bytes_per_ns) : at;
          std::vector<char> bytes;
          if (!link.spare.empty()) {
            bytes = std::move(link.spare.back());
            link.spare.pop_back();
          }
          bytes.assign(buffer.data(), buffer.data() + len);
          link.queued_bytes += size_t(len);
          link.queue.push_back({link.line_free_ns + link.delay_ns, to, std::move(bytes)});
        }
      }
    }
  }
  unlink(argv[1]);
  return 0;
}
