/*
 * tcphalf: TCP connections past established, one in each state, each end checking that
 * its reads and writes give what the state says.
 * Usage: tcphalf WORKDIR both 4|6          every end in this process
 *        tcphalf WORKDIR server 4|6        listens on the loopback, prints "PORT <p>",
 *                                          holds the server ends
 *        tcphalf WORKDIR client 4|6 PORT   holds the client ends
 * (protocol in wl.h). Seven connections, set up in this order (the two processes keep in
 * step over the first, `ctl`):
 *   half     the client sent 1000 bytes and shut down; the server read them and the EOF
 *            and keeps sending (server CLOSE_WAIT, client FIN_WAIT2);
 *   unread   the same, the server has read nothing: bytes then EOF wait for it;
 *   fw1      the server filled the client's window and shut down, its FIN waiting behind
 *            the bytes (server FIN_WAIT1, client ESTABLISHED, still sending);
 *   lastack  the client shut down, the server read the EOF, filled the window and shut
 *            down (server LAST_ACK, client FIN_WAIT2);
 *   closing  the server filled the window and shut down, then the client shut down
 *            (server CLOSING, client FIN_WAIT2);
 *   ended    both sent bytes the other has not read and shut down: both CLOSE.
 * A check: each end's tcp_info state is the one above; reads give the bytes in order then
 * the end of file where the peer shut down, and writes fail with EPIPE where this end
 * did; data still flows where it can (half: 4 KiB more from the server each check, which
 * the client must receive; fw1, lastack, closing: the client reads 16 KiB more of what
 * the server queued; fw1: 1 KiB more from the client); the addresses are the same
 * (getpeername fails with ENOTCONN once ended). The server's checks run first.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <poll.h>

enum { CTL, HALF, UNREAD, FW1, LASTACK, CLOSING, ENDED, NCONN };
static const char *names[NCONN] = { "ctl", "half", "unread", "fw1", "lastack", "closing", "ended" };

/* The expected states: server end, client end. */
static const int want_srv[NCONN] = { TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_CLOSE_WAIT, TCP_FIN_WAIT1,
				      TCP_LAST_ACK, TCP_CLOSING, TCP_CLOSE };
static const int want_cli[NCONN] = { TCP_ESTABLISHED, TCP_FIN_WAIT2, TCP_FIN_WAIT2, TCP_ESTABLISHED,
				      TCP_FIN_WAIT2, TCP_FIN_WAIT2, TCP_CLOSE };

struct end {
	int fd;
	struct sockaddr_storage me, peer;
	uint64_t sent, got; /* pattern positions */
};
static struct end srv[NCONN], cli[NCONN];
static int fam;

#define UNREAD_LEN 1000
#define ENDED_C2S 500
#define ENDED_S2C 300

static int state_of(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		return -1;
	return ti.tcpi_state;
}

static void send_pat(struct end *e, uint64_t seed, size_t n)
{
	uint8_t buf[4096];
	while (n) {
		size_t k = n < sizeof(buf) ? n : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = wl_pat(seed, e->sent + i);
		ssize_t r = send(e->fd, buf, k, MSG_NOSIGNAL);
		if (r <= 0)
			wl_die("send");
		e->sent += r;
		n -= r;
	}
}

/* Sends the pattern until the socket takes no more, twice (the kernel moves bytes on to
 * the peer in between), so that bytes wait unsent behind a full window. */
static void fill(struct end *e, uint64_t seed)
{
	for (int round = 0; round < 2; round++) {
		for (;;) {
			uint8_t buf[16384];
			for (size_t i = 0; i < sizeof(buf); i++)
				buf[i] = wl_pat(seed, e->sent + i);
			ssize_t r = send(e->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);
			if (r < 0 && errno == EAGAIN)
				break;
			if (r <= 0)
				wl_die("send (fill)");
			e->sent += r;
		}
		wl_sleep_ms(20);
	}
}

static void wait_poll(int fd, short what, const char *why)
{
	struct pollfd p = { fd, what, 0 };
	for (int i = 0; i < 1000; i++) {
		if (poll(&p, 1, 10) > 0 && (p.revents & what))
			return;
	}
	wl_die("waiting for %s", why);
}

static void wait_state(int fd, int st, const char *which)
{
	for (int i = 0; i < 1000; i++) {
		if (state_of(fd) == st)
			return;
		wl_sleep_ms(10);
	}
	wl_die("%s never reached state %d (it is in %d)", which, st, state_of(fd));
}

/* One read of at most `max` bytes of the pattern, checked: *n says how many (0: none has
 * arrived); 0 if the read fails, gives the end of file or a wrong byte. */
static int take(struct end *e, uint64_t seed, size_t max, size_t *n, const char *what)
{
	uint8_t buf[16384];
	ssize_t r = recv(e->fd, buf, max < sizeof(buf) ? max : sizeof(buf), MSG_DONTWAIT);
	*n = 0;
	if (r < 0 && errno == EAGAIN)
		return 1;
	WL_CHECK(r > 0, "%s: recv after %llu bytes: %s", what, (unsigned long long)e->got,
		 r == 0 ? "end of file" : strerror(errno));
	for (ssize_t i = 0; i < r; i++)
		WL_CHECK(buf[i] == wl_pat(seed, e->got + i), "%s: byte %llu is wrong", what,
			 (unsigned long long)(e->got + i));
	e->got += r;
	*n = r;
	return 1;
}

/* Reads exactly `n` bytes of the pattern (waiting up to 30 s); 0 and a reason if not. */
static int read_pat(struct end *e, uint64_t seed, size_t n, const char *what)
{
	for (int tries = 0; n && tries < 3000; tries++) {
		size_t r;
		if (!take(e, seed, n, &r, what))
			return 0;
		if (!r)
			wl_sleep_ms(10);
		n -= r;
	}
	WL_CHECK(n == 0, "%s: %zu bytes missing after 30 s (got %llu)", what, n,
		 (unsigned long long)e->got);
	return 1;
}

/* Reads whatever has arrived, checking it. */
static int read_avail(struct end *e, uint64_t seed, const char *what)
{
	for (;;) {
		size_t r;
		if (!take(e, seed, SIZE_MAX, &r, what))
			return 0;
		if (!r)
			return 1;
	}
}

static int is_eof(struct end *e, const char *what)
{
	char c;
	ssize_t r = recv(e->fd, &c, 1, MSG_DONTWAIT);
	WL_CHECK(r == 0, "%s: a read gives %zd (%s), not the end of file", what, r,
		 r < 0 ? strerror(errno) : "a byte");
	return 1;
}

static int write_fails(struct end *e, const char *what)
{
	ssize_t r = send(e->fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	WL_CHECK(r < 0 && errno == EPIPE, "%s: a write gives %zd (%s), not EPIPE", what, r,
		 r < 0 ? strerror(errno) : "sent");
	return 1;
}

static int same_addresses(struct end *e, int ended, const char *what)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	WL_CHECK(getsockname(e->fd, (void *)&ss, &l) == 0 && memcmp(&ss, &e->me, l) == 0,
		 "%s: the local address changed", what);
	l = sizeof(ss);
	int r = getpeername(e->fd, (void *)&ss, &l);
	if (ended)
		WL_CHECK(r < 0 && errno == ENOTCONN, "%s: getpeername works on an ended connection",
			 what);
	else
		WL_CHECK(r == 0 && memcmp(&ss, &e->peer, l) == 0, "%s: the peer changed", what);
	return 1;
}

/* The state of a connection whose FIN was waiting behind a full window may move on once
 * the window opens (the peer reads, and a restored receiver announces the room its
 * buffer has): FIN_WAIT1 to FIN_WAIT2, LAST_ACK and CLOSING to CLOSE, and the other end
 * then sees the FIN. Reads and writes mean the same in both. */
static int state_ok(int got, int want)
{
	if (got == want)
		return 1;
	switch (want) {
	case TCP_FIN_WAIT1:
		return got == TCP_FIN_WAIT2;
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return got == TCP_CLOSE;
	case TCP_ESTABLISHED:
		return got == TCP_CLOSE_WAIT;
	case TCP_FIN_WAIT2:
		return got == TCP_CLOSE;
	}
	return 0;
}

/* Every end of one side in its state, with its addresses. */
static int states_ok(struct end *ends, const int *want, const char *side)
{
	char what[64];
	for (int k = 0; k < NCONN; k++) {
		struct end *e = &ends[k];
		snprintf(what, sizeof(what), "%s %s", side, names[k]);
		int moves = k == FW1 || k == LASTACK || k == CLOSING;
		int st = state_of(e->fd);
		WL_CHECK(st == want[k] || (moves && state_ok(st, want[k])), "%s: state %d, want %d",
			 what, st, want[k]);
		if (!same_addresses(e, st == TCP_CLOSE, what))
			return 0;
	}
	return 1;
}

static int check_server(void)
{
	char what[64];
	if (!states_ok(srv, want_srv, "server"))
		return 0;
	/* half: the EOF again, and more bytes the other way */
	if (!is_eof(&srv[HALF], "server half"))
		return 0;
	send_pat(&srv[HALF], 11, 4096);
	/* unread: 200 bytes more, then the EOF once all are read */
	struct pollfd p = { srv[UNREAD].fd, POLLIN | POLLRDHUP, 0 };
	WL_CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP), "server unread: no POLLRDHUP");
	uint64_t left = UNREAD_LEN - srv[UNREAD].got;
	if (!read_pat(&srv[UNREAD], 20, left < 200 ? left : 200, "server unread"))
		return 0;
	if (srv[UNREAD].got == UNREAD_LEN && !is_eof(&srv[UNREAD], "server unread"))
		return 0;
	/* fw1: shut down, still reading what the client sends */
	if (!write_fails(&srv[FW1], "server fw1"))
		return 0;
	/* both ends here: exactly what the client sent at its checks; else what came */
	if (cli[FW1].fd >= 0) {
		size_t n = cli[FW1].sent - srv[FW1].got;
		if (n && !read_pat(&srv[FW1], 31, n, "server fw1"))
			return 0;
	} else if (!read_avail(&srv[FW1], 31, "server fw1")) {
		return 0;
	}
	for (int k = LASTACK; k <= ENDED; k++) {
		snprintf(what, sizeof(what), "server %s", names[k]);
		if (!write_fails(&srv[k], what))
			return 0;
		if (k != ENDED && !is_eof(&srv[k], what))
			return 0;
	}
	left = ENDED_C2S - srv[ENDED].got;
	if (!read_pat(&srv[ENDED], 60, left < 100 ? left : 100, "server ended"))
		return 0;
	if (srv[ENDED].got == ENDED_C2S && !is_eof(&srv[ENDED], "server ended"))
		return 0;
	return 1;
}

static uint64_t half_got_before;

static int check_client(void)
{
	char what[64];
	if (!states_ok(cli, want_cli, "client"))
		return 0;
	/* half: the server's 4 KiB of this check (and of every earlier one) arrive */
	if (!read_pat(&cli[HALF], 11, half_got_before + 4096 - cli[HALF].got, "client half"))
		return 0;
	half_got_before = cli[HALF].got;
	for (int k = HALF; k <= ENDED; k++) {
		snprintf(what, sizeof(what), "client %s", names[k]);
		if (k != FW1 && !write_fails(&cli[k], what))
			return 0;
	}
	/* fw1, lastack, closing: 16 KiB more of what the server queued */
	if (!read_pat(&cli[FW1], 30, 16384, "client fw1") ||
	    !read_pat(&cli[LASTACK], 40, 16384, "client lastack") ||
	    !read_pat(&cli[CLOSING], 50, 16384, "client closing"))
		return 0;
	send_pat(&cli[FW1], 31, 1024);
	uint64_t left = ENDED_S2C - cli[ENDED].got;
	if (!read_pat(&cli[ENDED], 61, left < 50 ? left : 50, "client ended"))
		return 0;
	if (cli[ENDED].got == ENDED_S2C && !is_eof(&cli[ENDED], "client ended"))
		return 0;
	return 1;
}

static int verify(void)
{
	if (srv[0].fd >= 0 && !check_server())
		return 0;
	if (cli[0].fd >= 0 && !check_client())
		return 0;
	return 1;
}

static void corrupt(void)
{
	if (cli[0].fd >= 0)
		cli[HALF].got++;
	else
		srv[UNREAD].got++;
}

static void addresses(struct end *e)
{
	socklen_t l = sizeof(e->me);
	getsockname(e->fd, (void *)&e->me, &l);
	l = sizeof(e->peer);
	getpeername(e->fd, (void *)&e->peer, &l);
}

/* The server tells the client a step is done, over `ctl`. */
static void ctl_send(char step)
{
	if (send(srv[CTL].fd, &step, 1, 0) != 1)
		wl_die("ctl %c", step);
}

static void ctl_wait(char step)
{
	char c;
	if (recv(cli[CTL].fd, &c, 1, 0) != 1 || c != step)
		wl_die("ctl %c", step);
}

static void client_part1(void)
{
	send_pat(&cli[HALF], 10, 1000);
	shutdown(cli[HALF].fd, SHUT_WR);
	send_pat(&cli[UNREAD], 20, UNREAD_LEN);
	shutdown(cli[UNREAD].fd, SHUT_WR);
	shutdown(cli[LASTACK].fd, SHUT_WR);
	send_pat(&cli[ENDED], 60, ENDED_C2S);
	shutdown(cli[ENDED].fd, SHUT_WR);
}

static void server_part1(void)
{
	char buf[1000];
	size_t got = 0;
	while (got < sizeof(buf)) {
		ssize_t r = recv(srv[HALF].fd, buf + got, sizeof(buf) - got, 0);
		if (r <= 0)
			wl_die("recv half");
		got += r;
	}
	if (wl_cmp(buf, sizeof(buf), 10) != (size_t)-1 || recv(srv[HALF].fd, buf, 1, 0) != 0)
		wl_die("half: not 1000 bytes then EOF");
	wait_poll(srv[UNREAD].fd, POLLRDHUP, "unread's FIN");
	fill(&srv[FW1], 30);
	shutdown(srv[FW1].fd, SHUT_WR);
	if (recv(srv[LASTACK].fd, buf, 1, 0) != 0)
		wl_die("lastack: no EOF");
	fill(&srv[LASTACK], 40);
	shutdown(srv[LASTACK].fd, SHUT_WR);
	fill(&srv[CLOSING], 50);
	shutdown(srv[CLOSING].fd, SHUT_WR);
	send_pat(&srv[ENDED], 61, ENDED_S2C);
	wait_poll(srv[ENDED].fd, POLLRDHUP, "ended's FIN");
	shutdown(srv[ENDED].fd, SHUT_WR);
	ctl_send('A');
}

static void client_part2(void)
{
	ctl_wait('A');
	shutdown(cli[CLOSING].fd, SHUT_WR);
}

static void server_part2(void)
{
	for (int k = 0; k < NCONN; k++)
		wait_state(srv[k].fd, want_srv[k], names[k]);
	ctl_send('B');
}

static void client_part3(void)
{
	ctl_wait('B');
	for (int k = 0; k < NCONN; k++)
		wait_state(cli[k].fd, want_cli[k], names[k]);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		wl_die("usage: tcphalf WORKDIR both|server|client 4|6 [PORT]");
	wl_init();
	int both = strcmp(argv[2], "both") == 0;
	int server = both || strcmp(argv[2], "server") == 0;
	int client = both || strcmp(argv[2], "client") == 0;
	fam = argv[3][0] == '6' ? AF_INET6 : AF_INET;
	for (int k = 0; k < NCONN; k++)
		srv[k].fd = cli[k].fd = -1;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t len;
	if (fam == AF_INET6) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	}
	int lsn = -1, small = 65536;
	if (server) {
		lsn = socket(fam, SOCK_STREAM, 0);
		/* Small buffers: little to queue behind the full windows (accepted sockets
		 * inherit the send buffer). */
		if (lsn < 0 || setsockopt(lsn, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) ||
		    bind(lsn, (void *)&ss, len) || listen(lsn, 16))
			wl_die("listen");
		socklen_t l = sizeof(ss);
		getsockname(lsn, (void *)&ss, &l);
		if (!both) {
			printf("PORT %d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
			fflush(stdout);
		}
	} else {
		if (argc < 5)
			wl_die("client: no PORT");
		((struct sockaddr_in *)&ss)->sin_port = htons(atoi(argv[4]));
	}
	if (client) {
		for (int k = 0; k < NCONN; k++) {
			cli[k].fd = socket(fam, SOCK_STREAM, 0);
			if (cli[k].fd < 0)
				wl_die("socket");
			if (k == FW1 || k == LASTACK || k == CLOSING)
				setsockopt(cli[k].fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
			if (connect(cli[k].fd, (void *)&ss, len))
				wl_die("connect %s", names[k]);
		}
	}
	if (server) {
		for (int k = 0; k < NCONN; k++) {
			srv[k].fd = accept(lsn, NULL, NULL);
			if (srv[k].fd < 0)
				wl_die("accept");
		}
		close(lsn);
	}
	for (int k = 0; k < NCONN; k++) {
		if (srv[k].fd >= 0)
			addresses(&srv[k]);
		if (cli[k].fd >= 0)
			addresses(&cli[k]);
	}
	if (client)
		client_part1();
	if (server)
		server_part1();
	if (client)
		client_part2();
	if (server)
		server_part2();
	if (client)
		client_part3();
	wl_ready();
	for (;;) {
		wl_sleep_ms(5);
		wl_poll(verify, corrupt);
	}
}
