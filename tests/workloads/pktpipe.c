/*
 * pktpipe: pipes in packet mode (O_DIRECT) keep their packets across a checkpoint.
 * Usage: pktpipe WORKDIR [fifo]   (protocol in wl.h)
 *
 * Setup: fds 10 (read) / 11 (write) from pipe2(O_DIRECT), holding the packets "ab",
 * "cde" and one of 5000 bytes (which the kernel splits into 4096 + 904); fds 12 / 13 a
 * plain pipe whose write end alone was switched to packet mode with F_SETFL, holding
 * "x" and "yz".
 * Checks: each end's O_DIRECT as set (pipe2 gives it to the write end only); the packets read one by one (each read() returns
 * exactly one), then written back in order, so the next check finds them again.
 * With "fifo": a FIFO in WORKDIR opened O_RDWR on fd 14, switched to packet mode and
 * holding two packets, which ckpt refuses (they would come back as one stream).
 * Corruption: the packets of 10/11 are written back as one.
 */
#include "wl.h"
#include <sys/stat.h>

static char big[5000];
static const char *p1[] = { "ab", "cde", big };
static const size_t n1[] = { 2, 3, 4096, 904 };
static const char *p2[] = { "x", "yz" };

static void put(int fd, const void *b, size_t n)
{
	if (write(fd, b, n) != (ssize_t)n)
		wl_die("write %zu bytes to fd %d", n, fd);
}

static void fill1(void)
{
	put(11, p1[0], 2);
	put(11, p1[1], 3);
	put(11, big, sizeof(big));
}

/* Reads `count` packets from `rfd`: each must be one read of length `len[i]` with the
 * bytes at `want[i]`; writes them back through `wfd`. */
static int packets(int rfd, int wfd, const size_t *len, const char *const *want, int count)
{
	char buf[8192];
	size_t got[8];
	char saved[8][4096];
	int ok = 1;
	for (int i = 0; i < count; i++) {
		ssize_t r = read(rfd, buf, sizeof(buf));
		got[i] = r < 0 ? 0 : (size_t)r;
		memcpy(saved[i], buf, got[i] > 4096 ? 4096 : got[i]);
		if (r != (ssize_t)len[i] || memcmp(buf, want[i], len[i])) {
			wl_fail("fd %d: packet %d: %zd bytes, want %zu", rfd, i, r, len[i]);
			ok = 0;
		}
	}
	if (ok && read(rfd, buf, sizeof(buf)) >= 0) {
		wl_fail("fd %d: more than %d packets", rfd, count);
		ok = 0;
	}
	for (int i = 0; i < count; i++)
		if (got[i])
			put(wfd, saved[i], got[i]);
	return ok;
}

static int verify(void)
{
	/* pipe2() gives O_DIRECT to the write end only */
	WL_CHECK(!(fcntl(10, F_GETFL) & O_DIRECT), "fd 10 gained O_DIRECT");
	WL_CHECK(fcntl(11, F_GETFL) & O_DIRECT, "fd 11 lost O_DIRECT");
	WL_CHECK(!(fcntl(12, F_GETFL) & O_DIRECT), "fd 12 gained O_DIRECT");
	WL_CHECK(fcntl(13, F_GETFL) & O_DIRECT, "fd 13 lost O_DIRECT");
	const char *w1[] = { p1[0], p1[1], big, big + 4096 };
	WL_CHECK(packets(10, 11, n1, w1, 4), "pipe 10/11");
	const size_t n2[] = { 1, 2 };
	WL_CHECK(packets(12, 13, n2, p2, 2), "pipe 12/13");
	return 1;
}

static void corrupt(void)
{
	char buf[8192];
	size_t n = 0;
	ssize_t r;
	while ((r = read(10, buf + n, sizeof(buf) - n)) > 0)
		n += r;
	fcntl(11, F_SETFL, O_NONBLOCK);
	put(11, buf, n);
	fcntl(11, F_SETFL, O_NONBLOCK | O_DIRECT);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: pktpipe WORKDIR [fifo]");
	wl_init();
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 1);
	int p[2];
	if (pipe2(p, O_DIRECT | O_NONBLOCK) || dup2(p[0], 10) < 0 || dup2(p[1], 11) < 0)
		wl_die("pipe2 O_DIRECT");
	close(p[0]);
	close(p[1]);
	fill1();
	if (pipe2(p, O_NONBLOCK) || dup2(p[0], 12) < 0 || dup2(p[1], 13) < 0)
		wl_die("pipe2");
	close(p[0]);
	close(p[1]);
	if (fcntl(13, F_SETFL, O_NONBLOCK | O_DIRECT))
		wl_die("F_SETFL O_DIRECT");
	put(13, p2[0], 1);
	put(13, p2[1], 2);
	if (argc > 2 && !strcmp(argv[2], "fifo")) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/pkt-fifo", argv[1]);
		if (mkfifo(path, 0600))
			wl_die("mkfifo");
		int f = open(path, O_RDWR | O_NONBLOCK);
		if (f < 0 || dup2(f, 14) < 0 || fcntl(14, F_SETFL, O_NONBLOCK | O_DIRECT))
			wl_die("fifo");
		close(f);
		put(14, "1", 1);
		put(14, "22", 2);
	}
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, corrupt);
	}
}
