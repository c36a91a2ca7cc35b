/*
 * Per-socket options of unix sockets: a datagram socketpair whose receiving end has a
 * classic BPF filter (drops messages starting with 'X'), locked (SO_LOCK_FILTER), with
 * SO_RCVTIMEO, SO_SNDTIMEO, SO_PRIORITY, SO_MARK, SO_TIMESTAMP and a message queued
 * across the dump; a stream socketpair with SO_RCVLOWAT, SO_PASSPIDFD, SO_PASSSEC,
 * SO_PASSRIGHTS off and SO_BUF_LOCK. The check reads each option back, the filter's
 * instructions, and sees the filter act (an 'X' message is dropped, another comes through).
 */
#include "wl.h"
#include <linux/filter.h>
#include <sys/time.h>

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif
#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

static int d[2], st[2];
static int have_passrights;
static struct sock_filter prog[] = {
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'X', 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
};

static int opt(int fd, int name, int want, const char *what)
{
	int v = -1;
	socklen_t len = sizeof(v);
	WL_CHECK(!getsockopt(fd, SOL_SOCKET, name, &v, &len), "%s: %s", what, strerror(errno));
	WL_CHECK(v == want, "%s is %d, want %d", what, v, want);
	return 1;
}

static int timeo(int fd, int name, long sec, long usec, const char *what)
{
	struct timeval tv = { 0 };
	socklen_t len = sizeof(tv);
	WL_CHECK(!getsockopt(fd, SOL_SOCKET, name, &tv, &len), "%s: %s", what, strerror(errno));
	WL_CHECK(tv.tv_sec == sec && tv.tv_usec == usec, "%s is %ld.%06ld, want %ld.%06ld", what,
		 (long)tv.tv_sec, (long)tv.tv_usec, sec, usec);
	return 1;
}

static int verify(void)
{
	struct sock_filter got[8];
	socklen_t n = 8;
	WL_CHECK(!getsockopt(d[1], SOL_SOCKET, SO_GET_FILTER, got, &n), "SO_GET_FILTER: %s",
		 strerror(errno));
	WL_CHECK(n == 4 && !memcmp(got, prog, sizeof(prog)), "filter: %u instructions, not ours",
		 n);
	if (!opt(d[1], SO_LOCK_FILTER, 1, "SO_LOCK_FILTER") ||
	    !timeo(d[1], SO_RCVTIMEO, 7, 500000, "SO_RCVTIMEO") ||
	    !timeo(d[0], SO_SNDTIMEO, 3, 200000, "SO_SNDTIMEO") ||
	    !opt(d[1], SO_PRIORITY, 5, "SO_PRIORITY") || !opt(d[0], SO_MARK, 4242, "SO_MARK") ||
	    !opt(d[1], SO_TIMESTAMP, 1, "SO_TIMESTAMP") ||
	    !opt(st[0], SO_RCVLOWAT, 3, "SO_RCVLOWAT") ||
	    !opt(st[0], SO_PASSPIDFD, 1, "SO_PASSPIDFD") ||
	    !opt(st[1], SO_PASSSEC, 1, "SO_PASSSEC") ||
	    !opt(st[1], SO_BUF_LOCK, 1, "SO_BUF_LOCK"))
		return 0;
	if (have_passrights && !opt(st[1], SO_PASSRIGHTS, 0, "SO_PASSRIGHTS"))
		return 0;
	/* The queued message, then the filter at work. */
	char buf[16] = { 0 };
	ssize_t r = recv(d[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
	WL_CHECK(r == 6 && !memcmp(buf, "queued", 6), "queued message: %zd bytes %s", r, buf);
	WL_CHECK(send(d[0], "Xdrop", 5, 0) == 5 && send(d[0], "keep", 4, 0) == 4, "send: %s",
		 strerror(errno));
	r = recv(d[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
	WL_CHECK(r == 4 && !memcmp(buf, "keep", 4), "after the filter: %zd bytes %.*s", r,
		 (int)(r > 0 ? r : 0), buf);
	WL_CHECK(recv(d[1], buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN,
		 "more than the filter let through");
	WL_CHECK(send(d[0], "queued", 6, 0) == 6, "requeue: %s", strerror(errno));
	return 1;
}

static void corrupt(void)
{
	int v = 1;
	setsockopt(st[0], SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v));
}

static void set(int fd, int name, const void *v, socklen_t len, const char *what)
{
	if (setsockopt(fd, SOL_SOCKET, name, v, len))
		wl_die("%s", what);
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc < 2)
		return 2;
	wl_init();
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, d) || socketpair(AF_UNIX, SOCK_STREAM, 0, st))
		wl_die("socketpair");
	struct sock_fprog fp = { 4, prog };
	int one = 1, zero = 0, five = 5, mark = 4242, three = 3;
	struct timeval rt = { 7, 500000 }, wt = { 3, 200000 };
	set(d[1], SO_ATTACH_FILTER, &fp, sizeof(fp), "SO_ATTACH_FILTER");
	set(d[1], SO_LOCK_FILTER, &one, sizeof(one), "SO_LOCK_FILTER");
	set(d[1], SO_RCVTIMEO, &rt, sizeof(rt), "SO_RCVTIMEO");
	set(d[0], SO_SNDTIMEO, &wt, sizeof(wt), "SO_SNDTIMEO");
	set(d[1], SO_PRIORITY, &five, sizeof(five), "SO_PRIORITY");
	set(d[0], SO_MARK, &mark, sizeof(mark), "SO_MARK");
	set(d[1], SO_TIMESTAMP, &one, sizeof(one), "SO_TIMESTAMP");
	set(st[0], SO_RCVLOWAT, &three, sizeof(three), "SO_RCVLOWAT");
	set(st[0], SO_PASSPIDFD, &one, sizeof(one), "SO_PASSPIDFD");
	set(st[1], SO_PASSSEC, &one, sizeof(one), "SO_PASSSEC");
	set(st[1], SO_BUF_LOCK, &one, sizeof(one), "SO_BUF_LOCK");
	have_passrights = !setsockopt(st[1], SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero));
	if (send(d[0], "queued", 6, 0) != 6)
		wl_die("send");
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, corrupt);
	}
}
