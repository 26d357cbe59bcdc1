// Packet loss for scripts/cluster.py's hosts: a tc classifier (direct-action) that drops each
// packet it sees with probability LOSS_PPM / 1e6, as a lossy link would. The kernels this
// project's machines run have no sch_netem (tc netem loss); they do have cls_bpf. Built and
// attached by Cluster.shape(host, loss=...) where host's packets enter the switch:
//   clang -O2 -target bpf -DLOSS_PPM=10000 -c cluster_loss.bpf.c -o loss-10000.o
//   tc -n primal-switch qdisc add dev port1 clsact
//   tc -n primal-switch filter add dev port1 ingress bpf da obj loss-10000.o sec classifier
// There, not on the host's own eth0 egress: a packet dropped there fails the sender's
// dev_queue_xmit (NET_XMIT_DROP), and TCP sends it again at once; lost on the way, it is
// noticed only as a wire loss is (duplicate ACKs, a retransmission timeout).
// No headers: the one helper is called by its number (BPF_FUNC_*).
#ifndef LOSS_PPM
#error "LOSS_PPM: the loss rate in parts per million, e.g. -DLOSS_PPM=10000 for 1%"
#endif

#define SEC(name) __attribute__((section(name), used))
typedef unsigned int u32;

enum { kTcActOk = 0, kTcActShot = 2 };  // TC_ACT_OK: pass; TC_ACT_SHOT: drop
// bpf_get_prandom_u32: BPF_FUNC_get_prandom_u32 = 7 (linux/bpf.h), a per-CPU PRNG.
static u32 (*bpf_get_prandom_u32)(void) = (void*)7;

SEC("classifier") int drop_some(void* skb) {
  (void)skb;
  return bpf_get_prandom_u32() % 1000000u < LOSS_PPM ? kTcActShot : kTcActOk;
}

char _license[] SEC("license") = "GPL";
