/*
 * ptybytes: bytes queued in pty pairs it holds, both ways, survive a checkpoint.
 * Usage: ptybytes WORKDIR   (protocol in wl.h)
 *  - pair A, canonical, no echo, INLCR|ICRNL (CR and NL swapped on input, so input
 *    processed twice would read differently): typed (written at the master)
 *    "one\rtwo\nthree\r", an end of file (VEOF), and "part\tx" (a line not finished);
 *    the slave has written "out-A\nout-B" (the master reads "out-A\r\nout-B");
 *  - pair B, raw: typed "r\x03\x7f\0z\r", written "\x01\x02raw-out\n".
 * A check reads them all from the other end (the slave: "one\n", "two\rthree\n", end of
 * file, then nothing until the test of the partial line is completed by a CR from the
 * master: "part\tx\n") and queues them again.
 */
#include "wl.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

struct pair {
	int m, s;
};
static struct pair A, B;

static const char A_IN[] = "one\rtwo\nthree\r\x04part\tx";
static const char A_OUT[] = "out-A\nout-B";
static const char A_OUT_READ[] = "out-A\r\nout-B";
static const char B_IN[] = "r\x03\x7f\0z\r";
static const char B_OUT[] = "\x01\x02raw-out\n";

static void open_pair(struct pair *p, int raw)
{
	p->m = posix_openpt(O_RDWR | O_NOCTTY);
	if (p->m < 0 || grantpt(p->m) || unlockpt(p->m))
		wl_die("posix_openpt");
	p->s = open(ptsname(p->m), O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (p->s < 0)
		wl_die("open %s", ptsname(p->m));
	struct termios t;
	if (tcgetattr(p->s, &t))
		wl_die("tcgetattr");
	if (raw)
		cfmakeraw(&t);
	else {
		t.c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOKE);
		t.c_iflag |= INLCR | ICRNL;
	}
	if (tcsetattr(p->s, TCSANOW, &t))
		wl_die("tcsetattr");
	if (fcntl(p->m, F_SETFL, O_NONBLOCK))
		wl_die("O_NONBLOCK");
}

/* Reads exactly `n` bytes from `fd` (non-blocking) within a few seconds. */
static int read_all(int fd, char *buf, size_t n)
{
	size_t got = 0;
	for (int tries = 0; got < n && tries < 500; tries++) {
		ssize_t k = read(fd, buf + got, n - got);
		if (k > 0) {
			got += k;
			continue;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		poll(&p, 1, 10);
	}
	return got == n;
}

static int slave_reads(int s, const char *want, size_t n, const char *what)
{
	char buf[256];
	struct pollfd p = { .fd = s, .events = POLLIN };
	poll(&p, 1, 5000);
	ssize_t k = read(s, buf, sizeof(buf));
	WL_CHECK(k == (ssize_t)n && !memcmp(buf, want, n), "%s: read %zd bytes (%.*s), want %zu",
		 what, k, k > 0 ? (int)k : 0, buf, n);
	return 1;
}

static void queue(void)
{
	if (write(A.m, A_IN, sizeof(A_IN) - 1) != sizeof(A_IN) - 1 ||
	    write(A.s, A_OUT, sizeof(A_OUT) - 1) != sizeof(A_OUT) - 1 ||
	    write(B.m, B_IN, sizeof(B_IN) - 1) != sizeof(B_IN) - 1 ||
	    write(B.s, B_OUT, sizeof(B_OUT) - 1) != sizeof(B_OUT) - 1)
		wl_die("queueing");
	/* Both masters' output in, the raw slave's input in: no dump before it. */
	int n;
	for (int tries = 0; tries < 1000; tries++) {
		int a = 0, b = 0, c = 0, d = 0;
		ioctl(A.m, FIONREAD, &a);
		ioctl(B.m, FIONREAD, &b);
		ioctl(B.s, FIONREAD, &c);
		ioctl(A.s, FIONREAD, &d);
		n = a == sizeof(A_OUT_READ) - 1 && b == sizeof(B_OUT) - 1 &&
		    c == sizeof(B_IN) - 1 && d >= 4;
		if (n)
			return;
		wl_sleep_ms(5);
	}
	wl_die("the queued bytes never arrived");
}

static int verify(void)
{
	char buf[256];
	if (!slave_reads(A.s, "one\n", 4, "A line 1") ||
	    !slave_reads(A.s, "two\rthree\n", 10, "A line 2") ||
	    !slave_reads(A.s, "", 0, "A end of file"))
		return 0;
	errno = 0;
	ssize_t k = read(A.s, buf, sizeof(buf));
	WL_CHECK(k < 0 && errno == EAGAIN, "A: the unfinished line read early (%zd, %s)", k,
		 strerror(errno));
	WL_CHECK(write(A.m, "\r", 1) == 1, "write CR");
	if (!slave_reads(A.s, "part\tx\n", 7, "A line 3"))
		return 0;
	WL_CHECK(read_all(A.m, buf, sizeof(A_OUT_READ) - 1) &&
			 !memcmp(buf, A_OUT_READ, sizeof(A_OUT_READ) - 1),
		 "A: the master did not read the slave's output");
	WL_CHECK(read_all(B.s, buf, sizeof(B_IN) - 1) && !memcmp(buf, B_IN, sizeof(B_IN) - 1),
		 "B: the slave did not read the raw input");
	WL_CHECK(read_all(B.m, buf, sizeof(B_OUT) - 1) && !memcmp(buf, B_OUT, sizeof(B_OUT) - 1),
		 "B: the master did not read the raw output");
	int left[4] = { 0, 0, 0, 0 };
	ioctl(A.s, FIONREAD, &left[0]);
	ioctl(A.m, FIONREAD, &left[1]);
	ioctl(B.s, FIONREAD, &left[2]);
	ioctl(B.m, FIONREAD, &left[3]);
	WL_CHECK(!left[0] && !left[1] && !left[2] && !left[3], "bytes left over: %d %d %d %d",
		 left[0], left[1], left[2], left[3]);
	queue();
	return 1;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	open_pair(&A, 0);
	open_pair(&B, 1);
	queue();
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, NULL);
	}
}
