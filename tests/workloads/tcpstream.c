/*
 * tcpstream: one TCP connection carrying a numbered byte stream in each direction, as
 * fast as both ends read, so that at any moment bytes sit unsent, sent but not
 * acknowledged, and received but unread, on both sides.
 * Usage: tcpstream WORKDIR server 4|6       listens on 127.0.0.1 or ::1, prints
 *                                           "PORT <p>", READY, then accepts one client
 *        tcpstream WORKDIR client 4|6 PORT  connects, READY
 *        ... PORT ADDR                      listens on / connects to ADDR instead of
 *                                           the loopback (a container's veth address)
 * (protocol in wl.h). The server is the process that is checkpointed; the client runs
 * outside the dumped tree and never stops.
 *
 * Byte i from the server is wl_pat(1, i), from the client wl_pat(2, i). Each end checks
 * every byte it receives, in order; a reset, an EOF or any other error is a failure.
 * A check (SIGUSR1) keeps the stream going until both directions moved on by 256 KiB
 * since the check began (up to 60 s: the peer may be in retransmission back-off after a
 * restore), prints "COUNT <sent> <received>", and passes if nothing went wrong, the
 * connection still has the same two addresses and the server still listens.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int conn = -1, lsn = -1;
static uint64_t sent, got;
static struct sockaddr_storage me0, peer0;
static char err[300];

static void fail_once(const char *fmt, ...)
{
	if (err[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, sizeof(err), fmt, ap);
	va_end(ap);
}

/* One round: whatever the socket takes, whatever it has; waits at most `ms`. */
static void pump(int out_seed, int in_seed, int ms)
{
	if (err[0])
		return;
	struct pollfd p = { conn, POLLIN | POLLOUT, 0 };
	if (poll(&p, 1, ms) <= 0)
		return;
	if (p.revents & (POLLERR | POLLHUP)) {
		int e = 0;
		socklen_t l = sizeof(e);
		getsockopt(conn, SOL_SOCKET, SO_ERROR, &e, &l);
		fail_once("connection error after %llu sent, %llu received: %s (revents %#x)",
			  (unsigned long long)sent, (unsigned long long)got, strerror(e), p.revents);
		return;
	}
	if (p.revents & POLLOUT) {
		uint8_t buf[16384];
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = wl_pat(out_seed, sent + i);
		ssize_t r = send(conn, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0)
			sent += r;
		else if (r < 0 && errno != EAGAIN)
			fail_once("send after %llu bytes: %s", (unsigned long long)sent, strerror(errno));
	}
	if (p.revents & POLLIN) {
		uint8_t buf[16384];
		ssize_t r = recv(conn, buf, sizeof(buf), MSG_DONTWAIT);
		if (r == 0)
			fail_once("EOF after %llu bytes received", (unsigned long long)got);
		else if (r < 0 && errno != EAGAIN)
			fail_once("recv after %llu bytes: %s", (unsigned long long)got, strerror(errno));
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] != wl_pat(in_seed, got + i)) {
				fail_once("received byte %llu is %#x, want %#x",
					  (unsigned long long)(got + i), buf[i], wl_pat(in_seed, got + i));
				return;
			}
		}
		if (r > 0)
			got += r;
	}
}

static int is_server;

static int verify(void)
{
	int out_seed = is_server ? 1 : 2, in_seed = is_server ? 2 : 1;
	uint64_t s0 = sent, g0 = got;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!err[0] && (sent < s0 + 262144 || got < g0 + 262144)) {
		pump(out_seed, in_seed, 10);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 60) {
			fail_once("no progress in 60 s: sent %llu (+%llu), received %llu (+%llu)",
				  (unsigned long long)sent, (unsigned long long)(sent - s0),
				  (unsigned long long)got, (unsigned long long)(got - g0));
			break;
		}
	}
	printf("COUNT %llu %llu\n", (unsigned long long)sent, (unsigned long long)got);
	WL_CHECK(!err[0], "%s", err);
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	WL_CHECK(getsockname(conn, (void *)&ss, &l) == 0 && memcmp(&ss, &me0, l) == 0,
		 "the connection's local address changed");
	l = sizeof(ss);
	WL_CHECK(getpeername(conn, (void *)&ss, &l) == 0 && memcmp(&ss, &peer0, l) == 0,
		 "the connection's peer changed");
	int v = 0;
	l = sizeof(v);
	WL_CHECK(getsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v == 1,
		 "TCP_NODELAY lost");
	if (is_server) {
		l = sizeof(v);
		WL_CHECK(getsockopt(lsn, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && v == 1,
			 "the listener stopped listening");
	}
	return 1;
}

static void corrupt(void)
{
	got++; /* the next byte is checked against the wrong position */
}

int main(int argc, char **argv)
{
	if (argc < 4)
		wl_die("usage: tcpstream WORKDIR server|client 4|6 [PORT]");
	wl_init();
	is_server = strcmp(argv[2], "server") == 0;
	int v6 = argv[3][0] == '6';
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t len;
	if (v6) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		if (argc > 5 && inet_pton(AF_INET6, argv[5], &a->sin6_addr) != 1)
			wl_die("bad address %s", argv[5]);
		a->sin6_port = htons(argc > 4 ? atoi(argv[4]) : 0);
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (argc > 5 && inet_pton(AF_INET, argv[5], &a->sin_addr) != 1)
			wl_die("bad address %s", argv[5]);
		a->sin_port = htons(argc > 4 ? atoi(argv[4]) : 0);
		len = sizeof(*a);
	}
	int one = 1;
	if (is_server) {
		lsn = socket(ss.ss_family, SOCK_STREAM, 0);
		setsockopt(lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (lsn < 0)
			wl_die("socket");
		if (argc > 4) {
			if (bind(lsn, (void *)&ss, len))
				wl_die("bind");
		} else {
			wl_bind_lo(lsn, ss.ss_family);
		}
		if (listen(lsn, 4))
			wl_die("listen");
		socklen_t l = sizeof(ss);
		getsockname(lsn, (void *)&ss, &l);
		int port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
				    : ((struct sockaddr_in *)&ss)->sin_port);
		printf("PORT %d\n", port);
		fflush(stdout);
		conn = accept(lsn, NULL, NULL);
		if (conn < 0)
			wl_die("accept");
	} else {
		conn = socket(ss.ss_family, SOCK_STREAM, 0);
		if (conn < 0 || connect(conn, (void *)&ss, len))
			wl_die("connect");
	}
	setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	socklen_t l = sizeof(me0);
	getsockname(conn, (void *)&me0, &l);
	l = sizeof(peer0);
	getpeername(conn, (void *)&peer0, &l);
	wl_ready();
	for (;;) {
		pump(is_server ? 1 : 2, is_server ? 2 : 1, 5);
		/* a little slower than the wire: the queues fill up and drain all the time */
		wl_sleep_ms(1);
		wl_poll(verify, corrupt);
	}
}
