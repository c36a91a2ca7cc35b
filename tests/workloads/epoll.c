/*
 * epoll: epoll instances survive a checkpoint with every watch (fd, event mask with
 * EPOLLET / EPOLLONESHOT, data), nested (an epoll watching an epoll), and still report
 * readiness.
 * Usage: epoll WORKDIR [reuse]   (protocol in wl.h)
 *
 * Setup (fd: what):
 *   10/11  a pipe (read end, write end)
 *   12     UDP 127.0.0.1:0, 13 a UDP sender
 *   14     TCP 127.0.0.1:0 listening, SO_REUSEADDR
 *   20     epoll: fd 10 EPOLLIN data 0x1111; fd 12 EPOLLIN|EPOLLET data
 *          0xdeadbeef12345678; fd 11 EPOLLOUT|EPOLLONESHOT data 7 (fired once at setup:
 *          disarmed); fd 21 EPOLLIN data 21
 *   21     epoll (nested in 20): fd 14 EPOLLIN|EPOLLRDHUP data 14, close-on-exec
 *   22     dup of fd 20
 * With `reuse`: fd 15 (a dup of fd 12) is watched by fd 20, then closed and reopened as
 * /dev/null: the watch's fd number no longer names its file; the dump must refuse.
 * Checks: /proc/self/fdinfo of fds 20 and 21 list exactly those watches; a byte written
 * to the pipe makes fd 20 report 0x1111 (then read back); a datagram makes it report the
 * UDP data once (edge-triggered: not again until another arrives; then drained); a
 * connection to fd 14 makes fd 20 report 21 and fd 21 report 14 (then accepted and
 * closed); the one-shot watch stays disarmed.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* The kernel adds EPOLLERR | EPOLLHUP to every mask. */
#define EH (EPOLLERR | EPOLLHUP)

struct watch {
	int fd;
	unsigned events;
	unsigned long long data;
};

static struct sockaddr_in udp_addr, tcp_addr;

static int fdinfo_watches(int ep, struct watch *out, int max)
{
	char path[64], buf[8192];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
	ssize_t n = wl_read_file(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return -1;
	buf[n] = 0;
	int k = 0;
	for (char *l = strstr(buf, "tfd:"); l && k < max; l = strstr(l + 1, "tfd:")) {
		if (sscanf(l, "tfd: %d events: %x data: %llx", &out[k].fd, &out[k].events,
			   &out[k].data) == 3)
			k++;
	}
	return k;
}

static int same_watches(int ep, const struct watch *want, int n)
{
	struct watch got[16];
	int k = fdinfo_watches(ep, got, 16);
	WL_CHECK(k == n, "epoll fd %d has %d watches, want %d", ep, k, n);
	for (int i = 0; i < n; i++) {
		int found = 0;
		for (int j = 0; j < k; j++) {
			unsigned ev = got[j].events;
			/* A fired one-shot watch comes back disarmed, but registering one
			 * again always adds EPOLLERR | EPOLLHUP (a documented limit). */
			if (want[i].events == EPOLLONESHOT && ev == (EPOLLONESHOT | EH))
				ev = EPOLLONESHOT;
			if (got[j].fd == want[i].fd && ev == want[i].events &&
			    got[j].data == want[i].data)
				found = 1;
		}
		WL_CHECK(found, "epoll fd %d: no watch of fd %d events %#x data %#llx", ep,
			 want[i].fd, want[i].events, want[i].data);
	}
	return 1;
}

/* The data of the events epoll `ep` reports right now (at most 8). */
static int ready(int ep, unsigned long long *data)
{
	struct epoll_event ev[8];
	int n = epoll_wait(ep, ev, 8, 0);
	for (int i = 0; i < n; i++)
		data[i] = ev[i].data.u64;
	return n;
}

static int has(const unsigned long long *d, int n, unsigned long long v)
{
	for (int i = 0; i < n; i++)
		if (d[i] == v)
			return 1;
	return 0;
}

static struct watch outer[] = {
	{ 10, EPOLLIN | EH, 0x1111 },
	{ 12, EPOLLIN | EPOLLET | EH, 0xdeadbeef12345678ull },
	{ 11, EPOLLONESHOT, 7 }, /* disarmed: only the private bits are left */
	{ 21, EPOLLIN | EH, 21 },
	{ 15, EH, 15 }, /* `reuse` only: no events, it would report the UDP twice */
};
static int n_outer = 4;
static const struct watch inner[] = { { 14, EPOLLIN | EPOLLRDHUP | EH, 14 } };

static int verify(void)
{
	WL_CHECK(same_watches(20, outer, n_outer) && same_watches(21, inner, 1), "watches");
	WL_CHECK(fcntl(21, F_GETFD) == FD_CLOEXEC && fcntl(20, F_GETFD) == 0, "fd flags");
	unsigned long long d[8];
	int n = ready(20, d);
	WL_CHECK(n == 0, "fd 20 reports %d events with nothing ready (first %#llx)", n, d[0]);
	/* level-triggered pipe */
	WL_CHECK(write(11, "x", 1) == 1, "pipe write");
	n = ready(20, d);
	WL_CHECK(n == 1 && d[0] == 0x1111, "pipe: %d events, first %#llx", n, d[0]);
	n = ready(22, d);
	WL_CHECK(n == 1 && d[0] == 0x1111, "pipe through the dup fd 22: %d events", n);
	char c;
	WL_CHECK(read(10, &c, 1) == 1 && c == 'x', "pipe read");
	/* edge-triggered UDP: once */
	WL_CHECK(sendto(13, "u", 1, 0, (void *)&udp_addr, sizeof(udp_addr)) == 1, "sendto");
	n = ready(20, d);
	WL_CHECK(n == 1 && d[0] == 0xdeadbeef12345678ull, "udp: %d events, first %#llx", n, d[0]);
	n = ready(20, d);
	WL_CHECK(n == 0, "udp reported twice though edge-triggered");
	WL_CHECK(recv(12, &c, 1, MSG_DONTWAIT) == 1, "udp recv");
	/* nested: a connection to the listener */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	WL_CHECK(connect(s, (void *)&tcp_addr, sizeof(tcp_addr)) == 0, "connect: %s",
		 strerror(errno));
	n = ready(21, d);
	WL_CHECK(n == 1 && d[0] == 14, "inner: %d events", n);
	n = ready(20, d);
	WL_CHECK(n == 1 && has(d, n, 21), "outer did not report the inner epoll: %d events", n);
	int a = accept(14, NULL, NULL);
	WL_CHECK(a >= 0, "accept");
	close(a);
	close(s);
	n = ready(20, d);
	WL_CHECK(n == 0, "fd 20 still reports %d events after draining", n);
	return 1;
}

static void corrupt(void)
{
	epoll_ctl(20, EPOLL_CTL_DEL, 10, NULL);
}

static void bind_lo(int fd, struct sockaddr_in *a)
{
	wl_bind_lo(fd, AF_INET);
	socklen_t l = sizeof(*a);
	if (getsockname(fd, (void *)a, &l))
		wl_die("getsockname");
}

static void at(int fd, int want)
{
	if (fd < 0 || dup2(fd, want) < 0)
		wl_die("fd %d", want);
	if (fd != want)
		close(fd);
}

static void add(int ep, int fd, unsigned events, unsigned long long data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		wl_die("epoll_ctl %d", fd);
}

int main(int argc, char **argv)
{
	wl_init();
	int p[2];
	if (pipe(p))
		wl_die("pipe");
	at(p[0], 10);
	at(p[1], 11);
	at(socket(AF_INET, SOCK_DGRAM, 0), 12);
	bind_lo(12, &udp_addr);
	at(socket(AF_INET, SOCK_DGRAM, 0), 13);
	at(socket(AF_INET, SOCK_STREAM, 0), 14);
	/* the connections of the checks leave TIME_WAIT sockets on its port */
	int one = 1;
	setsockopt(14, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bind_lo(14, &tcp_addr);
	if (listen(14, 4))
		wl_die("listen");
	fcntl(10, F_SETFL, O_NONBLOCK);
	at(epoll_create1(0), 20);
	at(epoll_create1(0), 21);
	fcntl(21, F_SETFD, FD_CLOEXEC);
	add(21, 14, EPOLLIN | EPOLLRDHUP, 14);
	add(20, 10, EPOLLIN, 0x1111);
	add(20, 12, EPOLLIN | EPOLLET, 0xdeadbeef12345678ull);
	add(20, 11, EPOLLOUT | EPOLLONESHOT, 7);
	add(20, 21, EPOLLIN, 21);
	unsigned long long d[8];
	if (ready(20, d) != 1 || d[0] != 7)
		wl_die("the one-shot watch did not fire");
	if (dup2(20, 22) < 0)
		wl_die("dup2");
	if (argc > 2 && !strcmp(argv[2], "reuse")) {
		at(dup(12), 15);
		add(20, 15, 0, 15);
		close(15);
		at(open("/dev/null", O_RDONLY), 15);
		n_outer = 5;
	}
	wl_ready();
	for (;;) {
		wl_sleep_ms(10);
		wl_poll(verify, corrupt);
	}
}
