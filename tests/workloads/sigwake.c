/*
 * sigwake: threads blocked in syscalls are woken by signals handled on their way out of
 * a restore, with the kernel's restart rules for each kind of call.
 * Usage: sigwake WORKDIR
 * Prints "READY <pid>" once its three tasks block:
 *  - main: pause(), SIGUSR1 handler without SA_RESTART: must return EINTR (ERESTARTNOHAND);
 *  - thread "nors": read() of an empty pipe, SIGUSR2 handler without SA_RESTART: must
 *    return EINTR (ERESTARTSYS without SA_RESTART);
 *  - thread "rs": read() of another empty pipe, SIGWINCH handler with SA_RESTART: the read
 *    must run on (ERESTARTSYS with SA_RESTART) and return the byte main writes once it
 *    has seen the other two wake and rs's handler run.
 * Each task blocks only the signals meant for the others, so a process-directed signal
 * finds its task. Then prints one line per task and "DONE ok" (exit 0) or "DONE FAIL
 * <what>" (exit 1). A signal handled but its call started over shows as a task that
 * never wakes: no DONE line.
 */
#include "wl.h"
#include <pthread.h>

static volatile sig_atomic_t h_main, h_nors, h_rs;
static int pipe_nors[2], pipe_rs[2];

struct result {
	long r;
	int err;
	int handled;
};

static void on_main(int s) { (void)s; h_main = 1; }
static void on_nors(int s) { (void)s; h_nors = 1; }
static void on_rs(int s) { (void)s; h_rs = 1; }

static void block_all_but(int sig)
{
	sigset_t set;
	sigfillset(&set);
	sigdelset(&set, sig);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
}

struct reader {
	int sig; /* the one signal this thread takes */
	int fd;
	volatile sig_atomic_t *handled;
	volatile int ready;
	struct result res;
};
static struct reader r_nors, r_rs;

/* One blocking read of an empty pipe until a signal or a byte ends it. */
static void *reader(void *arg)
{
	struct reader *r = arg;
	block_all_but(r->sig);
	char c;
	r->ready = 1;
	long n = read(r->fd, &c, 1);
	r->res = (struct result){ n, n < 0 ? errno : 0, *r->handled };
	return NULL;
}

static void handle(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa = { 0 };
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL))
		wl_die("sigaction %d: %s", sig, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 2)
		wl_die("usage: sigwake WORKDIR");
	setvbuf(stdout, NULL, _IONBF, 0);
	handle(SIGUSR1, on_main, 0);
	handle(SIGUSR2, on_nors, 0);
	handle(SIGWINCH, on_rs, SA_RESTART);
	if (pipe(pipe_nors) || pipe(pipe_rs))
		wl_die("pipe: %s", strerror(errno));
	pthread_t a, b;
	block_all_but(SIGUSR1);
	r_nors = (struct reader){ .sig = SIGUSR2, .fd = pipe_nors[0], .handled = &h_nors };
	r_rs = (struct reader){ .sig = SIGWINCH, .fd = pipe_rs[0], .handled = &h_rs };
	if (pthread_create(&a, NULL, reader, &r_nors) || pthread_create(&b, NULL, reader, &r_rs))
		wl_die("pthread_create");
	while (!r_nors.ready || !r_rs.ready)
		usleep(1000);
	usleep(50000);
	printf("READY %d\n", getpid());
	long r = pause();
	int err = errno;
	printf("main r=%ld errno=%d handled=%d\n", r, err, h_main);
	const char *fail = NULL;
	if (r != -1 || err != EINTR || !h_main)
		fail = "main's pause did not fail with EINTR after its handler";
	pthread_join(a, NULL);
	printf("nors r=%ld errno=%d handled=%d\n", r_nors.res.r, r_nors.res.err, r_nors.res.handled);
	if (!fail && (r_nors.res.r != -1 || r_nors.res.err != EINTR || !r_nors.res.handled))
		fail = "nors's read did not fail with EINTR after its handler";
	/* The byte only once rs's handler ran: SIGWINCH may be sent after the others. */
	for (int i = 0; !h_rs && i < 20000; i++)
		usleep(1000);
	if (write(pipe_rs[1], "x", 1) != 1)
		wl_die("write: %s", strerror(errno));
	pthread_join(b, NULL);
	printf("rs r=%ld errno=%d handled=%d\n", r_rs.res.r, r_rs.res.err, r_rs.res.handled);
	if (!fail && (r_rs.res.r != 1 || !r_rs.res.handled))
		fail = "rs's read did not run on to its byte after its handler";
	if (fail) {
		printf("DONE FAIL %s\n", fail);
		return 1;
	}
	printf("DONE ok\n");
	return 0;
}
