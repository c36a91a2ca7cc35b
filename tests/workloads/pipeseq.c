/*
 * pipeseq: a writer (the parent) and a reader (its child) pass a numbered sequence of
 * 8-byte numbers through an anonymous pipe that is always full: bytes are in flight
 * whenever it is dumped.
 * Usage: pipeseq WORKDIR   (protocol in wl.h; the parent answers)
 *
 * Setup: pipe of 256 KiB (F_SETPIPE_SZ); the parent keeps both ends (its read end is the
 * description the child inherits: the child sets O_NONBLOCK on it, which the parent must
 * then see on its own copy too). The parent writes 1, 2, 3, ... as fast as the pipe takes
 * them (blocking, short writes resumed); the child reads what is above 64 KiB in the pipe
 * (so bytes are always in flight; EAGAIN: a short sleep) and checks each is the next one, publishing how far it got in a MAP_SHARED page, or the
 * first mismatch.
 * Check (parent, on SIGUSR1): no mismatch; the reader moved on since the last check
 * (waits up to 20 s); the pipe's size is 256 KiB at both ends; the write end is blocking,
 * the read end non-blocking (the child's O_NONBLOCK, seen through the shared description).
 * The child exits when its parent is gone.
 */
#include "wl.h"
#include <sys/ioctl.h>
#include <sys/mman.h>

#define PIPE_SIZE (256 << 10)
/* The reader leaves this much in the pipe. */
#define KEEP (64 << 10)

struct shared {
	volatile long read_upto;
	volatile int fail;
	char reason[200];
};

static struct shared *sh;
static int rfd, wfd;
static long next_write = 1, seen_before;

static void reader(pid_t parent)
{
	int fl = fcntl(rfd, F_GETFL);
	fcntl(rfd, F_SETFL, fl | O_NONBLOCK);
	close(wfd);
	unsigned char buf[4096];
	size_t have = 0;
	long expect = 1;
	for (;;) {
		if (getppid() != parent)
			_exit(0);
		/* Only what is above KEEP: the pipe always holds bytes in flight. */
		int avail = 0;
		ioctl(rfd, FIONREAD, &avail);
		if (avail <= KEEP) {
			wl_sleep_ms(1);
			continue;
		}
		size_t want = avail - KEEP < (int)(sizeof(buf) - have) ? avail - KEEP : sizeof(buf) - have;
		ssize_t n = read(rfd, buf + have, want);
		if (n < 0 && errno == EAGAIN) {
			wl_sleep_ms(1);
			continue;
		}
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			snprintf(sh->reason, sizeof(sh->reason), "read: %zd errno %d", n, errno);
			sh->fail = 1;
			_exit(1);
		}
		have += n;
		size_t i = 0;
		for (; i + 8 <= have; i += 8) {
			long v;
			memcpy(&v, buf + i, 8);
			if (v != expect && !sh->fail) {
				snprintf(sh->reason, sizeof(sh->reason), "read %ld, expected %ld", v,
					 expect);
				sh->fail = 1;
			}
			expect++;
		}
		memmove(buf, buf + i, have - i);
		have -= i;
		sh->read_upto = expect - 1;
		/* Slower than the writer: the pipe stays full. */
		wl_sleep_ms(1);
	}
}

static int verify(void)
{
	WL_CHECK(!sh->fail, "reader: %s", sh->reason);
	for (int i = 0; i < 2000 && sh->read_upto <= seen_before; i++)
		wl_sleep_ms(10);
	WL_CHECK(!sh->fail, "reader: %s", sh->reason);
	WL_CHECK(sh->read_upto > seen_before, "reader stuck at %ld", sh->read_upto);
	seen_before = sh->read_upto;
	WL_CHECK(fcntl(wfd, F_GETPIPE_SZ) == PIPE_SIZE, "write end: pipe size %d",
		 fcntl(wfd, F_GETPIPE_SZ));
	WL_CHECK(fcntl(rfd, F_GETPIPE_SZ) == PIPE_SIZE, "read end: pipe size %d",
		 fcntl(rfd, F_GETPIPE_SZ));
	WL_CHECK(!(fcntl(wfd, F_GETFL) & O_NONBLOCK), "write end became non-blocking");
	WL_CHECK(fcntl(rfd, F_GETFL) & O_NONBLOCK,
		 "read end is blocking: not the description the child made non-blocking");
	return 1;
}

static void corrupt(void)
{
	/* A number out of sequence. */
	long bad = -1;
	write(wfd, &bad, 8);
}

int main(int argc, char **argv)
{
	if (argc < 2 || chdir(argv[1]))
		wl_die("usage: pipeseq WORKDIR");
	wl_init();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	int p[2];
	if (pipe(p))
		wl_die("pipe");
	rfd = p[0];
	wfd = p[1];
	if (fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE) != PIPE_SIZE)
		wl_die("F_SETPIPE_SZ");
	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0)
		reader(parent);
	long batch[512];
	int ready = 0;
	for (;;) {
		/* Ready once the child made the read end non-blocking and bytes are in flight. */
		int avail = 0;
		if (!ready && (fcntl(rfd, F_GETFL) & O_NONBLOCK) && !ioctl(rfd, FIONREAD, &avail) &&
		    avail >= KEEP) {
			ready = 1;
			wl_ready();
		}
		for (int i = 0; i < 512; i++)
			batch[i] = next_write++;
		size_t off = 0;
		while (off < sizeof(batch)) {
			ssize_t n = write(wfd, (char *)batch + off, sizeof(batch) - off);
			if (n < 0 && errno != EINTR)
				wl_die("write");
			if (n > 0)
				off += n;
			wl_poll(verify, corrupt);
		}
	}
}
