/*
 * pktsock: packet sockets, each checked against what it was set up with.
 *   lo     SOCK_DGRAM for ethertype 0x88b5 (local experimental: nobody else sends it),
 *          bound to lo, PACKET_AUXDATA on;
 *   any    SOCK_RAW for ethertype 0x88b6 on every interface, TPACKET_V2, PACKET_RESERVE
 *          64, PACKET_ORIGDEV on.
 * A check: type, protocol and interface (getsockname), the options (getsockopt), and a
 * frame of 0x88b5 sent on lo through `lo` comes back to it, with its auxiliary data,
 * carrying this check's number; nothing is left queued.
 */
#include "wl.h"
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/uio.h>

#define PROTO_LO 0x88b5
#define PROTO_ANY 0x88b6

enum { LO, ANY, N };
static const char *names[N] = { "lo", "any" };
static const int types[N] = { SOCK_DGRAM, SOCK_RAW };
static const int protos[N] = { PROTO_LO, PROTO_ANY };
static int fds[N], lo_index;
static uint32_t round_no;

static int popt(int fd, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_PACKET, name, &v, &l))
		return -1;
	return v;
}

/* Sends this round's frame on lo and waits for it to come back. */
static int echo(void)
{
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(PROTO_LO),
				  .sll_ifindex = lo_index, .sll_halen = ETH_ALEN };
	char out[64] = "pktsock", in[128];
	round_no++;
	memcpy(out + 8, &round_no, sizeof(round_no));
	WL_CHECK(sendto(fds[LO], out, sizeof(out), 0, (void *)&to, sizeof(to)) == sizeof(out),
		 "lo: sendto: %s", strerror(errno));
	for (int tries = 0; tries < 100; tries++) {
		struct pollfd p = { fds[LO], POLLIN, 0 };
		WL_CHECK(poll(&p, 1, 10000) == 1, "lo: no frame in 10 s (round %u)", round_no);
		char cbuf[256];
		struct iovec iov = { in, sizeof(in) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				    .msg_controllen = sizeof(cbuf) };
		ssize_t r = recvmsg(fds[LO], &m, MSG_DONTWAIT);
		WL_CHECK(r >= 0, "lo: recvmsg: %s", strerror(errno));
		uint32_t got;
		memcpy(&got, in + 8, sizeof(got));
		if (r != sizeof(out) || memcmp(in, "pktsock", 8) || got != round_no)
			continue; /* an older round's, or someone else's */
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		WL_CHECK(c && c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA,
			 "lo: no PACKET_AUXDATA with the frame");
		/* Nothing else comes (a specific protocol sees no outgoing copy). */
		struct pollfd q = { fds[LO], POLLIN, 0 };
		while (poll(&q, 1, 0) == 1)
			recv(fds[LO], in, sizeof(in), MSG_DONTWAIT);
		return 1;
	}
	return wl_fail("lo: the frame of round %u never came back", round_no);
}

static int verify(void)
{
	for (int k = 0; k < N; k++) {
		struct sockaddr_ll a;
		socklen_t l = sizeof(a);
		int ty = -1;
		socklen_t tl = sizeof(ty);
		WL_CHECK(getsockname(fds[k], (void *)&a, &l) == 0, "%s: getsockname: %s", names[k],
			 strerror(errno));
		getsockopt(fds[k], SOL_SOCKET, SO_TYPE, &ty, &tl);
		int want_if = k == LO ? lo_index : 0;
		WL_CHECK(ty == types[k] && ntohs(a.sll_protocol) == protos[k] && a.sll_ifindex == want_if,
			 "%s: type %d protocol %#x ifindex %d, want %d %#x %d", names[k], ty,
			 ntohs(a.sll_protocol), a.sll_ifindex, types[k], protos[k], want_if);
	}
	WL_CHECK(popt(fds[LO], PACKET_AUXDATA) == 1 && popt(fds[LO], PACKET_ORIGDEV) == 0,
		 "lo: auxdata %d origdev %d", popt(fds[LO], PACKET_AUXDATA),
		 popt(fds[LO], PACKET_ORIGDEV));
	WL_CHECK(popt(fds[ANY], PACKET_VERSION) == TPACKET_V2 && popt(fds[ANY], PACKET_RESERVE) == 64 &&
			 popt(fds[ANY], PACKET_ORIGDEV) == 1 && popt(fds[ANY], PACKET_AUXDATA) == 0,
		 "any: version %d reserve %d origdev %d auxdata %d", popt(fds[ANY], PACKET_VERSION),
		 popt(fds[ANY], PACKET_RESERVE), popt(fds[ANY], PACKET_ORIGDEV),
		 popt(fds[ANY], PACKET_AUXDATA));
	return echo();
}

static void corrupt(void)
{
	lo_index++;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	lo_index = if_nametoindex("lo");
	if (!lo_index)
		wl_die("no lo");
	for (int k = 0; k < N; k++) {
		fds[k] = socket(AF_PACKET, types[k] | SOCK_CLOEXEC, htons(protos[k]));
		if (fds[k] < 0)
			wl_die("socket %s", names[k]);
	}
	int one = 1, v2 = TPACKET_V2, reserve = 64;
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(PROTO_LO),
				 .sll_ifindex = lo_index };
	if (setsockopt(fds[LO], SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) ||
	    bind(fds[LO], (void *)&a, sizeof(a)))
		wl_die("lo setup");
	if (setsockopt(fds[ANY], SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) ||
	    setsockopt(fds[ANY], SOL_PACKET, PACKET_RESERVE, &reserve, sizeof(reserve)) ||
	    setsockopt(fds[ANY], SOL_PACKET, PACKET_ORIGDEV, &one, sizeof(one)))
		wl_die("any setup");
	if (!echo())
		wl_die("%s", wl_reason);
	wl_ready();
	for (;;) {
		wl_sleep_ms(5);
		wl_poll(verify, corrupt);
	}
}
