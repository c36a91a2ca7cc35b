/*
 * netflight: sockets of the network in flight (SCM_RIGHTS sent, not received), as a
 * supervisor hands a service its listening socket (systemd's socket passing).
 * Usage: netflight WORKDIR [conn]   (protocol in wl.h)
 * On a stream socketpair `car` (sent at car[0], waiting at car[1]), one message each,
 * the sender's copy closed after sending:
 *  'l' a TCP listener on a loopback port, SO_REUSEADDR and SO_KEEPALIVE set, backlog 7;
 *  'u' a UDP socket bound to a loopback port with the datagram "udp-data" queued, sent
 *      by the UDP socket `from` the process keeps.
 * A check receives both and uses them: the listener is the one on its port (getsockname,
 * SO_ACCEPTCONN, its options), accepts a connection made to it and a byte goes both
 * ways; the UDP socket is on its port and reads "udp-data" from `from`'s port; then both
 * are queued again as they were.
 * `conn`: the client end of an established connection to a listener the process keeps
 * is in flight too (refused by the dump).
 */
#include "wl.h"
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int car[2], from;
static struct sockaddr_in lport, uport, fport;

static struct sockaddr_in name_of(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(fd, (void *)&a, &len))
		wl_die("getsockname %d", fd);
	return a;
}

static int opt(int fd, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, name, &v, &len))
		return -1;
	return v;
}

static void queue(int l, int u)
{
	if (sendto(from, "udp-data", 8, 0, (void *)&uport, sizeof(uport)) != 8)
		wl_die("sendto");
	/* The datagram is in u's queue before u flies (loopback delivers at once). */
	int q = 0;
	if (ioctl(u, FIONREAD, &q) || q != 8)
		wl_die("udp queue %d", q);
	wl_send_fd(car[0], 'l', l);
	wl_send_fd(car[0], 'u', u);
	close(l);
	close(u);
}

static int verify(void)
{
	char tag = 0, b = 0;
	int l = wl_recv_fd(car[1], &tag);
	WL_CHECK(l >= 0 && tag == 'l', "the listener in flight: fd %d tag %c (%s)", l, tag,
		 strerror(errno));
	struct sockaddr_in a = name_of(l);
	WL_CHECK(a.sin_port == lport.sin_port && a.sin_addr.s_addr == lport.sin_addr.s_addr,
		 "the listener is on port %d, not %d", ntohs(a.sin_port), ntohs(lport.sin_port));
	WL_CHECK(opt(l, SO_ACCEPTCONN) == 1, "the socket in flight does not listen");
	WL_CHECK(opt(l, SO_REUSEADDR) == 1 && opt(l, SO_KEEPALIVE) == 1,
		 "the listener's options: reuseaddr %d keepalive %d", opt(l, SO_REUSEADDR),
		 opt(l, SO_KEEPALIVE));
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	WL_CHECK(c >= 0 && !connect(c, (void *)&lport, sizeof(lport)),
		 "connect to the listener: %s", strerror(errno));
	int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	WL_CHECK(s >= 0, "accept: %s", strerror(errno));
	WL_CHECK(write(c, "c", 1) == 1 && read(s, &b, 1) == 1 && b == 'c', "client to server");
	WL_CHECK(write(s, "s", 1) == 1 && read(c, &b, 1) == 1 && b == 's', "server to client");
	close(s);
	close(c);
	int u = wl_recv_fd(car[1], &tag);
	WL_CHECK(u >= 0 && tag == 'u', "the UDP socket in flight: fd %d tag %c", u, tag);
	a = name_of(u);
	WL_CHECK(a.sin_port == uport.sin_port, "the UDP socket is on port %d, not %d",
		 ntohs(a.sin_port), ntohs(uport.sin_port));
	char buf[64];
	struct sockaddr_in src;
	socklen_t len = sizeof(src);
	ssize_t n = recvfrom(u, buf, sizeof(buf), MSG_DONTWAIT, (void *)&src, &len);
	WL_CHECK(n == 8 && !memcmp(buf, "udp-data", 8), "the UDP socket reads %zd bytes (%s)",
		 n, strerror(errno));
	WL_CHECK(src.sin_port == fport.sin_port, "the datagram is from port %d, not %d",
		 ntohs(src.sin_port), ntohs(fport.sin_port));
	queue(l, u);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	wl_init();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, car))
		wl_die("socketpair");
	int one = 1;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(l, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)))
		wl_die("listener");
	wl_bind_lo(l, AF_INET);
	if (listen(l, 7))
		wl_die("listen");
	lport = name_of(l);
	int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	from = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (u < 0 || from < 0)
		wl_die("udp");
	wl_bind_lo(u, AF_INET);
	wl_bind_lo(from, AF_INET);
	uport = name_of(u);
	fport = name_of(from);
	if (argc > 2 && !strcmp(argv[2], "conn")) {
		int kept = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		wl_bind_lo(kept, AF_INET);
		struct sockaddr_in k = name_of(kept);
		int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (listen(kept, 1) || c < 0 || connect(c, (void *)&k, sizeof(k)) ||
		    accept4(kept, NULL, NULL, SOCK_CLOEXEC) < 0)
			wl_die("conn");
		wl_send_fd(car[0], 'c', c);
		close(c);
	}
	queue(l, u);
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, NULL);
	}
}
