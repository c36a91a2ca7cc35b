/*
 * synsent: a TCP connection being made (SYN_SENT) across checkpoints.
 * Usage: synsent WORKDIR listen 4|6        a listener on 127.0.0.1 or ::1 with a backlog
 *                                         of 0 and its accept queue full (one connection
 *                                         of its own, not accepted): every further SYN
 *                                         is dropped. Prints "PORT <p>", READY. Its
 *                                         first check opens the queue (accepts that
 *                                         connection) and says so in WORKDIR/opened;
 *                                         from then on it accepts and echoes every
 *                                         byte back.
 *        synsent WORKDIR connect 4|6 PORT a non-blocking connect to the listener, which
 *                                         stays in progress; READY.
 * (protocol in wl.h). The connecting process is the one checkpointed; the listener runs
 * outside the dumped tree and never stops.
 *
 * The connecting end's check passes while the connection is still being made (tcp_info
 * says SYN_SENT, O_NONBLOCK kept) from the same local address to the same peer. Once
 * the listener opened (WORKDIR/opened exists), a check waits up to 30 s for the
 * connection to complete (the SYN is retransmitted with back-off), then needs it
 * established from that same address, and 4096 bytes sent to come back from the echo
 * in order.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int fam, lsn = -1, filler = -1, conn = -1, opened;
static int clients[16], nclients;
static struct sockaddr_storage me0, peer0;
static socklen_t me_len, peer_len;
static char opened_path[4096];

static socklen_t loopback(struct sockaddr_storage *ss, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (fam == 6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons(port);
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a->sin_port = htons(port);
	return sizeof(*a);
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		return -1;
	return ti.tcpi_state;
}

/* The listener: first check opens its queue. */
static int listener_verify(void)
{
	if (!opened) {
		int c = accept(lsn, NULL, NULL);
		WL_CHECK(c >= 0, "accept of the filler: %s", strerror(errno));
		close(c);
		close(filler);
		opened = 1;
		int f = open(opened_path, O_WRONLY | O_CREAT, 0644);
		WL_CHECK(f >= 0, "%s: %s", opened_path, strerror(errno));
		close(f);
	}
	return 1;
}

static void listener_loop(void)
{
	for (;;) {
		wl_poll(listener_verify, NULL);
		struct pollfd p[17];
		int n = 0;
		if (opened && nclients < 16)
			p[n++] = (struct pollfd){ lsn, POLLIN, 0 };
		for (int i = 0; i < nclients; i++)
			p[n++] = (struct pollfd){ clients[i], POLLIN, 0 };
		if (poll(p, n, 50) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (!p[i].revents)
				continue;
			if (p[i].fd == lsn) {
				int c = accept(lsn, NULL, NULL);
				if (c >= 0)
					clients[nclients++] = c;
				continue;
			}
			char buf[4096];
			ssize_t r = read(p[i].fd, buf, sizeof(buf));
			if (r > 0 && write(p[i].fd, buf, r) != r)
				wl_die("echo");
		}
	}
}

static int same_addresses(void)
{
	struct sockaddr_storage me, peer;
	socklen_t ml = sizeof(me), pl = peer_len;
	WL_CHECK(!getsockname(conn, (struct sockaddr *)&me, &ml), "getsockname: %s",
		 strerror(errno));
	WL_CHECK(ml == me_len && !memcmp(&me, &me0, ml), "local address changed");
	/* SO_PEERNAME answers while the connection is being made; getpeername does not. */
	WL_CHECK(!getsockopt(conn, SOL_SOCKET, SO_PEERNAME, &peer, &pl), "SO_PEERNAME: %s",
		 strerror(errno));
	WL_CHECK(pl == peer_len && !memcmp(&peer, &peer0, pl), "peer changed");
	return 1;
}

static int connect_verify(void)
{
	int fl = fcntl(conn, F_GETFL);
	WL_CHECK(fl >= 0 && (fl & O_NONBLOCK), "O_NONBLOCK lost (flags %#x)", fl);
	if (access(opened_path, F_OK)) {
		int st = tcp_state(conn);
		WL_CHECK(st == TCP_SYN_SENT, "state %d, want SYN_SENT (%d)", st, TCP_SYN_SENT);
		return same_addresses();
	}
	/* The last check: the listener opened, the connection completes. */
	struct pollfd p = { conn, POLLOUT, 0 };
	WL_CHECK(poll(&p, 1, 30000) == 1, "not connected within 30 s (state %d)",
		 tcp_state(conn));
	int e = 0;
	socklen_t l = sizeof(e);
	getsockopt(conn, SOL_SOCKET, SO_ERROR, &e, &l);
	WL_CHECK(e == 0, "connect failed: %s", strerror(e));
	WL_CHECK(tcp_state(conn) == TCP_ESTABLISHED, "state %d after POLLOUT", tcp_state(conn));
	if (!same_addresses())
		return 0;
	uint8_t out[4096], in[4096];
	wl_fill(out, sizeof(out), 7);
	size_t sent = 0, got = 0;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (got < sizeof(in)) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		WL_CHECK(t.tv_sec - t0.tv_sec < 30, "echo: %zu sent, %zu back in 30 s", sent, got);
		struct pollfd q = { conn, POLLIN | (sent < sizeof(out) ? POLLOUT : 0), 0 };
		if (poll(&q, 1, 100) <= 0)
			continue;
		WL_CHECK(!(q.revents & (POLLERR | POLLHUP)), "connection error (revents %#x)",
			 q.revents);
		if (q.revents & POLLOUT) {
			ssize_t r = send(conn, out + sent, sizeof(out) - sent, MSG_NOSIGNAL);
			WL_CHECK(r > 0 || errno == EAGAIN, "send: %s", strerror(errno));
			if (r > 0)
				sent += r;
		}
		if (q.revents & POLLIN) {
			ssize_t r = recv(conn, in + got, sizeof(in) - got, 0);
			WL_CHECK(r > 0 || (r < 0 && errno == EAGAIN), "recv: %s",
				 r ? strerror(errno) : "EOF");
			if (r > 0)
				got += r;
		}
	}
	size_t bad = wl_cmp(in, sizeof(in), 7);
	WL_CHECK(bad == (size_t)-1, "echoed byte %zu differs", bad);
	return 1;
}

static void corrupt(void)
{
	/* Remembered local port off by one: the check must see an address changed. */
	((struct sockaddr_in *)&me0)->sin_port ^= htons(1);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		wl_die("usage: synsent WORKDIR listen|connect 4|6 [PORT]");
	wl_init();
	snprintf(opened_path, sizeof(opened_path), "%s/opened", argv[1]);
	fam = atoi(argv[3]);
	int af = fam == 6 ? AF_INET6 : AF_INET;
	struct sockaddr_storage ss;
	if (!strcmp(argv[2], "listen")) {
		lsn = socket(af, SOCK_STREAM, 0);
		socklen_t l = loopback(&ss, 0);
		if (lsn < 0 || bind(lsn, (struct sockaddr *)&ss, l) || listen(lsn, 0))
			wl_die("listener");
		l = sizeof(ss);
		getsockname(lsn, (struct sockaddr *)&ss, &l);
		int port = ntohs(fam == 6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
					    ((struct sockaddr_in *)&ss)->sin_port);
		filler = socket(af, SOCK_STREAM, 0);
		l = loopback(&ss, port);
		if (filler < 0 || connect(filler, (struct sockaddr *)&ss, l))
			wl_die("filler connect");
		printf("PORT %d\n", port);
		wl_ready();
		listener_loop();
	}
	if (argc < 5)
		wl_die("connect needs a port");
	conn = socket(af, SOCK_STREAM | SOCK_NONBLOCK, 0);
	peer_len = loopback(&peer0, atoi(argv[4]));
	if (conn < 0)
		wl_die("socket");
	if (connect(conn, (struct sockaddr *)&peer0, peer_len) == 0 || errno != EINPROGRESS)
		wl_die("connect should be in progress");
	me_len = sizeof(me0);
	if (getsockname(conn, (struct sockaddr *)&me0, &me_len))
		wl_die("getsockname");
	/* SO_PEERNAME gives the address as the kernel keeps it (its padding zeroed); it
	 * refuses a buffer longer than the address. */
	memset(&peer0, 0, sizeof(peer0));
	if (getsockopt(conn, SOL_SOCKET, SO_PEERNAME, &peer0, &peer_len))
		wl_die("SO_PEERNAME");
	if (tcp_state(conn) != TCP_SYN_SENT)
		wl_die("state %d, not SYN_SENT (is the listener's queue full?)", tcp_state(conn));
	wl_ready();
	for (;;) {
		wl_poll(connect_verify, corrupt);
		wl_sleep_ms(20);
	}
}
