/*
 * inet: TCP and UDP sockets (IPv4 and IPv6) survive a checkpoint: their fd numbers,
 * flags, bindings, options, listening state and backlog, a UDP peer, and the datagrams
 * queued on UDP sockets (left unread until the final check).
 * Usage: inet WORKDIR   (protocol in wl.h)
 *
 * Setup (fd: what):
 *   10  TCP 127.0.0.1:0 listening, backlog 17, O_NONBLOCK, SO_REUSEADDR, TCP_NODELAY,
 *       SO_KEEPALIVE + TCP_KEEPIDLE 77 / KEEPINTVL 7 / KEEPCNT 5, SO_RCVBUF 65536
 *   11  TCP [::1]:0 listening, backlog 5, IPV6_V6ONLY, SO_REUSEPORT, close-on-exec
 *   12  UDP 127.0.0.1:0, 3 datagrams queued (from fd 14)
 *   13  UDP [::1]:0 connected to fd 15, 2 datagrams queued (from fd 15)
 *   14  UDP 127.0.0.1:0 (sender)
 *   15  UDP [::1]:0 (sender, connected to fd 13)
 *   16  TCP, never bound
 *   17  dup of fd 10
 * More options, each differing from a fresh socket's: fd 14 SO_BINDTODEVICE "lo",
 * SO_NO_CHECK, IP_RECVTTL, SO_PEEK_OFF 5; fd 15 IPV6_RECVHOPLIMIT, IPV6_MTU_DISCOVER
 * probe; fd 16 SO_DONTROUTE, IP_MTU_DISCOVER probe, TCP_THIN_LINEAR_TIMEOUTS, a classic
 * BPF filter of one instruction, locked (SO_LOCK_FILTER); fd 12 a filter of two.
 * With "ebpf" as second argument, fd 15 also gets an eBPF filter (SO_ATTACH_BPF), which
 * ckpt refuses by name.
 * Prints "PORTS <tcp4> <tcp6>". The main loop accepts on both listeners: a client that
 * sends a line gets "echo <line>" back (the test connects after each restore).
 * Checks: every fd as above (getsockname, peers, options, SO_ACCEPTCONN, TCP_INFO's
 * backlog, flags); the queued datagrams are all there, in order (peeked with
 * SO_PEEK_OFF, which is then switched off again). SIGUSR2 also reads them for real.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <net/if.h>
#include <sys/syscall.h>

static struct sockaddr_storage addr0[18];
static int served;

static int mk(int fd, int family, int type)
{
	int s = socket(family, type, 0);
	if (s < 0)
		wl_die("socket");
	if (dup2(s, fd) < 0)
		wl_die("dup2");
	close(s);
	return fd;
}

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof(v)))
		wl_die("setsockopt %d/%d on fd %d", level, name, fd);
}

static int geti(int fd, int level, int name)
{
	int v = -12345;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, level, name, &v, &l))
		return -12345;
	return v;
}

static void bind_lo(int fd, int family)
{
	wl_bind_lo(fd, family);
	socklen_t l = sizeof(addr0[fd]);
	getsockname(fd, (void *)&addr0[fd], &l);
}

static int port_of(int fd)
{
	struct sockaddr_storage *ss = &addr0[fd];
	if (ss->ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
}

static void send_dgram(int from, int to, const char *msg)
{
	socklen_t len = addr0[to].ss_family == AF_INET ? sizeof(struct sockaddr_in)
							: sizeof(struct sockaddr_in6);
	if (sendto(from, msg, strlen(msg), 0, (void *)&addr0[to], len) != (ssize_t)strlen(msg))
		wl_die("sendto");
}

static const char *q12[] = { "first v4 datagram", "second", "third, a longer one: 0123456789" };
static const char *q13[] = { "v6 one", "v6 two" };

/* The queued datagrams of `fd`, peeked in order, must be `want`. */
static int check_queue(int fd, const char **want, int n)
{
	WL_CHECK(geti(fd, SOL_SOCKET, SO_PEEK_OFF) == -1, "fd %d: SO_PEEK_OFF %d", fd,
		 geti(fd, SOL_SOCKET, SO_PEEK_OFF));
	seti(fd, SOL_SOCKET, SO_PEEK_OFF, 0);
	int i = 0, ok = 1;
	char buf[256];
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf) - 1, MSG_PEEK | MSG_DONTWAIT);
		if (r < 0)
			break;
		buf[r] = 0;
		if (i >= n || strcmp(buf, want[i])) {
			wl_fail("fd %d: datagram %d is \"%s\", want \"%s\"", fd, i, buf,
				i < n ? want[i] : "(none)");
			ok = 0;
			break;
		}
		i++;
	}
	seti(fd, SOL_SOCKET, SO_PEEK_OFF, -1);
	if (ok && i != n) {
		wl_fail("fd %d: %d datagrams queued, want %d", fd, i, n);
		ok = 0;
	}
	return ok;
}

static int same_name(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	WL_CHECK(getsockname(fd, (void *)&ss, &l) == 0, "fd %d: getsockname: %s", fd,
		 strerror(errno));
	WL_CHECK(memcmp(&ss, &addr0[fd], l) == 0, "fd %d: bound elsewhere than at start (port %d)",
		 fd, port_of(fd));
	return 1;
}

/* fd 16's filter: accept 0xffff bytes; fd 12's: load the length, accept that much. */
static struct sock_filter f16[] = { BPF_STMT(BPF_RET | BPF_K, 0xffff) };
static struct sock_filter f12[] = { BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
				    BPF_STMT(BPF_RET | BPF_A, 0) };

static void attach(int fd, struct sock_filter *f, unsigned short n)
{
	struct sock_fprog p = { n, f };
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &p, sizeof(p)))
		wl_die("SO_ATTACH_FILTER on fd %d", fd);
}

/* Whether fd's filter reads back as the `n` instructions at `f`. */
static int same_filter(int fd, const struct sock_filter *f, unsigned n)
{
	struct sock_filter got[4];
	socklen_t l = 4; /* in instructions */
	if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, got, &l) || l != n)
		return 0;
	return memcmp(got, f, n * sizeof(*f)) == 0;
}

/* An eBPF socket filter program that accepts every packet whole. */
static void attach_ebpf(int fd)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0xffff },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (unsigned long)insns;
	a.insn_cnt = 2;
	a.license = (unsigned long)"GPL";
	int prog = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (prog < 0)
		wl_die("BPF_PROG_LOAD");
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof(prog)))
		wl_die("SO_ATTACH_BPF");
	close(prog);
}

static void set_more(void)
{
	if (setsockopt(14, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3))
		wl_die("SO_BINDTODEVICE");
	seti(14, SOL_SOCKET, SO_NO_CHECK, 1);
	seti(14, IPPROTO_IP, IP_RECVTTL, 1);
	seti(14, SOL_SOCKET, SO_PEEK_OFF, 5);
	seti(15, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1);
	seti(15, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE);
	seti(16, SOL_SOCKET, SO_DONTROUTE, 1);
	seti(16, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE);
	seti(16, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1);
	attach(16, f16, 1);
	seti(16, SOL_SOCKET, SO_LOCK_FILTER, 1);
	attach(12, f12, 2);
}

static int check_more(void)
{
	char dev[IFNAMSIZ] = "";
	socklen_t l = sizeof(dev);
	WL_CHECK(getsockopt(14, SOL_SOCKET, SO_BINDTODEVICE, dev, &l) == 0 && !strcmp(dev, "lo"),
		 "fd 14 bound to device \"%s\"", dev);
	WL_CHECK(geti(14, SOL_SOCKET, SO_NO_CHECK) == 1, "fd 14 SO_NO_CHECK off");
	WL_CHECK(geti(14, IPPROTO_IP, IP_RECVTTL) == 1, "fd 14 IP_RECVTTL off");
	WL_CHECK(geti(14, SOL_SOCKET, SO_PEEK_OFF) == 5, "fd 14 SO_PEEK_OFF %d",
		 geti(14, SOL_SOCKET, SO_PEEK_OFF));
	WL_CHECK(geti(15, IPPROTO_IPV6, IPV6_RECVHOPLIMIT) == 1, "fd 15 IPV6_RECVHOPLIMIT off");
	WL_CHECK(geti(15, IPPROTO_IPV6, IPV6_MTU_DISCOVER) == IPV6_PMTUDISC_PROBE,
		 "fd 15 IPV6_MTU_DISCOVER %d", geti(15, IPPROTO_IPV6, IPV6_MTU_DISCOVER));
	WL_CHECK(geti(16, SOL_SOCKET, SO_DONTROUTE) == 1, "fd 16 SO_DONTROUTE off");
	WL_CHECK(geti(16, IPPROTO_IP, IP_MTU_DISCOVER) == IP_PMTUDISC_PROBE,
		 "fd 16 IP_MTU_DISCOVER %d", geti(16, IPPROTO_IP, IP_MTU_DISCOVER));
	WL_CHECK(geti(16, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS) == 1,
		 "fd 16 TCP_THIN_LINEAR_TIMEOUTS off");
	WL_CHECK(same_filter(16, f16, 1), "fd 16 lost its filter");
	WL_CHECK(geti(16, SOL_SOCKET, SO_LOCK_FILTER) == 1, "fd 16 filter not locked");
	WL_CHECK(same_filter(12, f12, 2), "fd 12 lost its filter");
	return 1;
}

static int verify(void)
{
	WL_CHECK(check_more(), "options");
	WL_CHECK(same_name(10) && same_name(11) && same_name(12) && same_name(13) &&
			 same_name(14) && same_name(15),
		 "names");
	WL_CHECK(geti(10, SOL_SOCKET, SO_ACCEPTCONN) == 1, "fd 10 not listening");
	WL_CHECK(geti(11, SOL_SOCKET, SO_ACCEPTCONN) == 1, "fd 11 not listening");
	WL_CHECK(geti(16, SOL_SOCKET, SO_ACCEPTCONN) == 0, "fd 16 listening");
	WL_CHECK(geti(10, SOL_SOCKET, SO_REUSEADDR) == 1, "fd 10 SO_REUSEADDR off");
	WL_CHECK(geti(11, SOL_SOCKET, SO_REUSEADDR) == 0, "fd 11 SO_REUSEADDR on");
	WL_CHECK(geti(11, SOL_SOCKET, SO_REUSEPORT) == 1, "fd 11 SO_REUSEPORT off");
	WL_CHECK(geti(10, IPPROTO_TCP, TCP_NODELAY) == 1, "fd 10 TCP_NODELAY off");
	WL_CHECK(geti(11, IPPROTO_TCP, TCP_NODELAY) == 0, "fd 11 TCP_NODELAY on");
	WL_CHECK(geti(10, SOL_SOCKET, SO_KEEPALIVE) == 1, "fd 10 SO_KEEPALIVE off");
	WL_CHECK(geti(10, IPPROTO_TCP, TCP_KEEPIDLE) == 77, "fd 10 TCP_KEEPIDLE %d",
		 geti(10, IPPROTO_TCP, TCP_KEEPIDLE));
	WL_CHECK(geti(10, IPPROTO_TCP, TCP_KEEPINTVL) == 7, "fd 10 TCP_KEEPINTVL");
	WL_CHECK(geti(10, IPPROTO_TCP, TCP_KEEPCNT) == 5, "fd 10 TCP_KEEPCNT");
	WL_CHECK(geti(10, SOL_SOCKET, SO_RCVBUF) == 2 * 65536, "fd 10 SO_RCVBUF %d",
		 geti(10, SOL_SOCKET, SO_RCVBUF));
	WL_CHECK(geti(11, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "fd 11 IPV6_V6ONLY off");
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	WL_CHECK(getsockopt(10, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 && ti.tcpi_sacked == 17,
		 "fd 10 backlog %u, want 17", ti.tcpi_sacked);
	l = sizeof(ti);
	WL_CHECK(getsockopt(11, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 && ti.tcpi_sacked == 5,
		 "fd 11 backlog %u, want 5", ti.tcpi_sacked);
	WL_CHECK(fcntl(10, F_GETFL) & O_NONBLOCK, "fd 10 lost O_NONBLOCK");
	WL_CHECK(!(fcntl(11, F_GETFL) & O_NONBLOCK), "fd 11 gained O_NONBLOCK");
	WL_CHECK(fcntl(11, F_GETFD) == FD_CLOEXEC, "fd 11 lost FD_CLOEXEC");
	WL_CHECK(fcntl(10, F_GETFD) == 0, "fd 10 gained FD_CLOEXEC");
	struct sockaddr_storage peer;
	l = sizeof(peer);
	WL_CHECK(getpeername(13, (void *)&peer, &l) == 0 && memcmp(&peer, &addr0[15], l) == 0,
		 "fd 13 not connected to fd 15");
	l = sizeof(peer);
	WL_CHECK(getpeername(12, (void *)&peer, &l) == -1 && errno == ENOTCONN, "fd 12 connected");
	WL_CHECK(check_queue(12, q12, 3), "queue 12");
	WL_CHECK(check_queue(13, q13, 2), "queue 13");
	/* fd 17 is fd 10: the same open file description */
	int fl = fcntl(10, F_GETFL);
	fcntl(17, F_SETFL, fl & ~O_NONBLOCK);
	int shared = !(fcntl(10, F_GETFL) & O_NONBLOCK);
	fcntl(17, F_SETFL, fl);
	WL_CHECK(shared, "fd 17 is not a dup of fd 10");
	if (wl_exit_req) {
		/* the final check takes them for real */
		char buf[64];
		for (int i = 0; i < 3; i++)
			WL_CHECK(recv(12, buf, sizeof(buf), MSG_DONTWAIT) == (ssize_t)strlen(q12[i]),
				 "recv fd 12 #%d", i);
		WL_CHECK(recv(12, buf, sizeof(buf), MSG_DONTWAIT) == -1, "a 4th datagram on fd 12");
	}
	return 1;
}

static void corrupt(void)
{
	char buf[64];
	recv(13, buf, sizeof(buf), MSG_DONTWAIT);
}

/* Answers one client of listener `fd`: a line in, "echo LINE" out. */
static void serve(int fd)
{
	int c = accept(fd, NULL, NULL);
	if (c < 0)
		return;
	struct pollfd p = { c, POLLIN, 0 };
	char buf[128];
	ssize_t r = 0;
	int ready;
	/* A restore ends a poll that was waiting with EINTR (its restart block is the
	 * kernel's): waited again, as any program must. */
	do
		ready = poll(&p, 1, 5000);
	while (ready < 0 && errno == EINTR);
	if (ready == 1)
		r = read(c, buf, sizeof(buf) - 1);
	if (r > 0) {
		buf[r] = 0;
		char out[160];
		int n = snprintf(out, sizeof(out), "echo %s", buf);
		if (write(c, out, n) != n)
			wl_fail("echo write: %s", strerror(errno));
		served++;
	}
	close(c);
}

int main(int argc, char **argv)
{
	wl_init();
	mk(10, AF_INET, SOCK_STREAM);
	seti(10, SOL_SOCKET, SO_REUSEADDR, 1);
	seti(10, IPPROTO_TCP, TCP_NODELAY, 1);
	seti(10, SOL_SOCKET, SO_KEEPALIVE, 1);
	seti(10, IPPROTO_TCP, TCP_KEEPIDLE, 77);
	seti(10, IPPROTO_TCP, TCP_KEEPINTVL, 7);
	seti(10, IPPROTO_TCP, TCP_KEEPCNT, 5);
	seti(10, SOL_SOCKET, SO_RCVBUF, 65536);
	bind_lo(10, AF_INET);
	if (listen(10, 17))
		wl_die("listen 10");
	fcntl(10, F_SETFL, fcntl(10, F_GETFL) | O_NONBLOCK);
	mk(11, AF_INET6, SOCK_STREAM);
	seti(11, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	seti(11, SOL_SOCKET, SO_REUSEPORT, 1);
	bind_lo(11, AF_INET6);
	if (listen(11, 5))
		wl_die("listen 11");
	fcntl(11, F_SETFD, FD_CLOEXEC);
	mk(12, AF_INET, SOCK_DGRAM);
	bind_lo(12, AF_INET);
	mk(13, AF_INET6, SOCK_DGRAM);
	bind_lo(13, AF_INET6);
	mk(14, AF_INET, SOCK_DGRAM);
	bind_lo(14, AF_INET);
	mk(15, AF_INET6, SOCK_DGRAM);
	bind_lo(15, AF_INET6);
	socklen_t l6 = sizeof(struct sockaddr_in6);
	if (connect(13, (void *)&addr0[15], l6) || connect(15, (void *)&addr0[13], l6))
		wl_die("connect udp6");
	for (int i = 0; i < 3; i++)
		send_dgram(14, 12, q12[i]);
	for (int i = 0; i < 2; i++)
		if (send(15, q13[i], strlen(q13[i]), 0) < 0)
			wl_die("send");
	mk(16, AF_INET, SOCK_STREAM);
	set_more();
	if (argc > 2 && !strcmp(argv[2], "ebpf"))
		attach_ebpf(15);
	if (dup2(10, 17) < 0)
		wl_die("dup2 17");
	printf("PORTS %d %d\n", port_of(10), port_of(11));
	wl_ready();
	for (;;) {
		struct pollfd p[2] = { { 10, POLLIN, 0 }, { 11, POLLIN, 0 } };
		int n = poll(p, 2, 20);
		if (n > 0) {
			if (p[0].revents & POLLIN)
				serve(10);
			if (p[1].revents & POLLIN)
				serve(11);
		}
		wl_poll(verify, corrupt);
	}
}
