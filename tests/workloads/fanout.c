/*
 * fanout: N-1 children (default N = 100) all write into one pipe through the one write
 * end they inherited (one open file description held by N-1 processes), and all hold one
 * inherited O_RDWR file; the root reads and checks every child's numbered records.
 * Usage: fanout WORKDIR [N]   (protocol in wl.h; the root answers)
 *
 * Records are 16 bytes ("<child 4 digits> <seq 10 digits>\n", atomic under PIPE_BUF);
 * each child writes one every ~10 ms. The root reads them (blocking) and checks that
 * each child's sequence goes 1, 2, 3, ... with none missing or twice.
 * Check (root, on SIGUSR1): no record was out of sequence; every child wrote since the
 * last check (waits up to 20 s); every child's fds 3 (the file) and 4 (the pipe's write
 * end) are the root's own descriptions (kcmp KCMP_FILE); the root closed its write end
 * (it holds fd 5, the read end).
 * A child whose parent is gone exits.
 */
#include "wl.h"
#include <linux/kcmp.h>
#include <sys/mman.h>

#define MAX 1024
#define REC 16

static int n = 100;
static pid_t kids[MAX];
static long next_seq[MAX], seen_before[MAX];
static char bad[200];
static int file_fd = 3, wend = 4, rend = 5;

static void child(int i, pid_t parent)
{
	char rec[REC + 1];
	for (long seq = 1;; seq++) {
		if (getppid() != parent)
			_exit(0);
		snprintf(rec, sizeof(rec), "%04d %010ld\n", i, seq);
		if (write(wend, rec, REC) != REC)
			_exit(1);
		wl_sleep_ms(10);
	}
}

/* Reads what is there (the pipe is non-blocking on the root's side). */
static void drain(void)
{
	char buf[REC * 256];
	static char part[REC];
	static int have;
	for (;;) {
		ssize_t got = read(rend, buf, sizeof(buf));
		if (got <= 0)
			return;
		for (ssize_t o = 0; o < got; o++) {
			part[have++] = buf[o];
			if (have < REC)
				continue;
			have = 0;
			int i = atoi(part);
			long seq = atol(part + 5);
			if (i < 1 || i >= n || part[REC - 1] != '\n') {
				if (!bad[0])
					snprintf(bad, sizeof(bad), "damaged record %.15s", part);
				continue;
			}
			if (seq != next_seq[i] && !bad[0])
				snprintf(bad, sizeof(bad), "child %d: record %ld, expected %ld", i,
					 seq, next_seq[i]);
			next_seq[i] = seq + 1;
		}
	}
}

static int verify(void)
{
	for (int t = 0; t < 2000; t++) {
		drain();
		int all = 1;
		for (int i = 1; i < n; i++)
			all &= next_seq[i] - 1 > seen_before[i];
		if (all)
			break;
		wl_sleep_ms(10);
	}
	WL_CHECK(!bad[0], "%s", bad);
	for (int i = 1; i < n; i++) {
		WL_CHECK(next_seq[i] - 1 > seen_before[i], "child %d wrote nothing (at %ld)", i,
			 next_seq[i] - 1);
		seen_before[i] = next_seq[i] - 1;
		WL_CHECK(syscall(SYS_kcmp, getpid(), kids[i], KCMP_FILE, file_fd, file_fd) == 0,
			 "child %d's fd %d is not the root's description", i, file_fd);
		WL_CHECK(syscall(SYS_kcmp, kids[1], kids[i], KCMP_FILE, wend, wend) == 0,
			 "child %d's write end is not child 1's description", i);
	}
	WL_CHECK(fcntl(wend, F_GETFD) < 0, "the root still holds the write end");
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2 || chdir(argv[1]))
		wl_die("usage: fanout WORKDIR [N]");
	if (argc > 2)
		n = atoi(argv[2]);
	if (n < 2 || n > MAX)
		wl_die("N out of range");
	wl_init();
	int f = open("fanout.file", O_RDWR | O_CREAT | O_TRUNC, 0600);
	int p[2];
	if (f < 0 || pipe(p))
		wl_die("setup");
	/* Out of the way first, then at their numbers. */
	int made[3] = { fcntl(f, F_DUPFD, 100), fcntl(p[1], F_DUPFD, 100), fcntl(p[0], F_DUPFD, 100) };
	close(f);
	close(p[0]);
	close(p[1]);
	if (dup2(made[0], file_fd) < 0 || dup2(made[1], wend) < 0 || dup2(made[2], rend) < 0)
		wl_die("dup2");
	for (int k = 0; k < 3; k++)
		close(made[k]);
	pid_t parent = getpid();
	for (int i = 1; i < n; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			wl_die("fork");
		if (kids[i] == 0) {
			close(rend);
			child(i, parent);
		}
		next_seq[i] = 1;
	}
	close(wend);
	fcntl(rend, F_SETFL, O_NONBLOCK);
	wl_ready();
	for (;;) {
		drain();
		wl_poll(verify, NULL);
		wl_sleep_ms(5);
	}
}
