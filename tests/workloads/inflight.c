/*
 * inflight: files in flight (SCM_RIGHTS sent, not received) survive a checkpoint.
 * Usage: inflight WORKDIR   (protocol in wl.h)
 *  - on a stream socketpair: "hello" with a pipe's read end (the pipe holds "pipe-data",
 *    the read end is closed here: only in flight) and a file (WORKDIR/inflight.dat,
 *    offset 5) also kept open here as fd `file` (one description);
 *  - on a datagram socketpair: "d1" with an eventfd (count 7, closed here), then "d2".
 * A check receives them: the pipe yields "pipe-data", the file shares its offset with
 * `file` (kcmp, and a seek seen through both), the eventfd reads 7, "d2" comes after
 * "d1"; then sends them all again.
 */
#include "wl.h"
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int st[2], dg[2], pw, file;

static void send_fds(int sock, const char *msg, const int *fds, int n)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = { (void *)msg, strlen(msg) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (n) {
		m.msg_control = cbuf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	if (sendmsg(sock, &m, 0) != (ssize_t)strlen(msg))
		wl_die("sendmsg %s", msg);
}

/* Receives one message; its fds into `fds` (up to 4); returns their count or -1. */
static int recv_fds(int sock, char *buf, size_t len, int *fds, ssize_t *got)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { buf, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	*got = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (*got < 0)
		return -1;
	int n = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			memcpy(fds, CMSG_DATA(c), sizeof(int) * n);
		}
	return n;
}

static void queue(int pr, int f, int ev)
{
	if (write(pw, "pipe-data", 9) != 9)
		wl_die("write pipe");
	int two[2] = { pr, f };
	send_fds(st[0], "hello", two, 2);
	send_fds(dg[0], "d1", &ev, 1);
	send_fds(dg[0], "d2", NULL, 0);
	close(pr);
	if (f != file)
		close(f);
	close(ev);
}

static int verify(void)
{
	char buf[64];
	int fds[4];
	ssize_t got;
	int n = recv_fds(st[1], buf, sizeof(buf), fds, &got);
	WL_CHECK(n == 2 && got == 5 && !memcmp(buf, "hello", 5),
		 "stream: %d fds, %zd bytes (%s)", n, got, strerror(errno));
	int pr = fds[0], f = fds[1];
	WL_CHECK(read(pr, buf, sizeof(buf)) == 9 && !memcmp(buf, "pipe-data", 9),
		 "the pipe in flight does not read pipe-data");
	WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0, f, file) == 0,
		 "the file in flight is not the description kept open");
	WL_CHECK(lseek(f, 0, SEEK_CUR) == 5, "the file in flight is at %ld",
		 (long)lseek(f, 0, SEEK_CUR));
	WL_CHECK(read(f, buf, 3) == 3 && !memcmp(buf, "567", 3), "the file reads wrong");
	WL_CHECK(lseek(file, 0, SEEK_CUR) == 8, "the offset is not shared");
	lseek(file, 5, SEEK_SET);
	n = recv_fds(dg[1], buf, sizeof(buf), fds, &got);
	WL_CHECK(n == 1 && got == 2 && !memcmp(buf, "d1", 2), "datagram 1: %d fds, %zd bytes",
		 n, got);
	int ev = fds[0];
	uint64_t v = 0;
	WL_CHECK(read(ev, &v, 8) == 8 && v == 7, "the eventfd in flight reads %llu",
		 (unsigned long long)v);
	v = 7;
	WL_CHECK(write(ev, &v, 8) == 8, "eventfd write");
	n = recv_fds(dg[1], buf, sizeof(buf), fds, &got);
	WL_CHECK(n == 0 && got == 2 && !memcmp(buf, "d2", 2), "datagram 2: %d fds, %zd bytes",
		 n, got);
	queue(pr, f, ev);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	wl_init();
	char path[4096];
	snprintf(path, sizeof(path), "%s/inflight.dat", argv[1]);
	file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (file < 0 || write(file, "0123456789", 10) != 10 || lseek(file, 5, SEEK_SET) != 5)
		wl_die("%s", path);
	int p[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    pipe(p))
		wl_die("socketpair/pipe");
	pw = p[1];
	int ev = eventfd(7, 0);
	if (ev < 0)
		wl_die("eventfd");
	queue(p[0], file, ev);
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, NULL);
	}
}
