/*
 * threads: the multi-threaded workload of ckpt-bench.
 * Usage: threads NTHREADS
 *
 * Starts NTHREADS threads: the even ones wait in pthread_cond_wait, the odd ones sleep
 * in 1 s nanosleeps; each counts its wake-ups and remembers its tid. Prints
 * "READY <pid> <nthreads>" once all run, then waits.
 *   SIGUSR1  wake every waiting thread, wait until every thread has counted a wake-up
 *            and check each still has its tid; print "PASS <nthreads>" or "FAIL ...".
 * stdout is written with write(2) (no stdio buffer to lose across a checkpoint).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXT 4096

static int n;
static pid_t tids[MAXT];
static volatile unsigned long wakes[MAXT];
static volatile int bad_tid = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned long gen;
static volatile sig_atomic_t check_req;

static void say(const char *fmt, ...)
{
	char b[256];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (write(1, b, len) < 0)
		exit(3);
}

static void *run(void *arg)
{
	int i = (int)(long)arg;
	tids[i] = (pid_t)syscall(SYS_gettid);
	for (;;) {
		if (i % 2 == 0) {
			pthread_mutex_lock(&mu);
			unsigned long g = gen;
			while (gen == g)
				pthread_cond_wait(&cv, &mu);
			pthread_mutex_unlock(&mu);
		} else {
			struct timespec ts = { 1, 0 };
			nanosleep(&ts, NULL);
		}
		if ((pid_t)syscall(SYS_gettid) != tids[i])
			bad_tid = i;
		wakes[i]++;
	}
	return NULL;
}

static void on_usr1(int sig)
{
	(void)sig;
	check_req = 1;
}

int main(int argc, char **argv)
{
	n = argc > 1 ? atoi(argv[1]) : 64;
	if (n < 1 || n > MAXT) {
		say("FAIL NTHREADS %d\n", n);
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 64 * 1024);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, &at, run, (void *)(long)i)) {
			say("FAIL pthread_create %d\n", i);
			return 2;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (int i = 0; i < n; i++)
		while (!tids[i])
			usleep(1000);
	say("READY %d %d\n", (int)getpid(), n);
	for (;;) {
		pause();
		if (!check_req)
			continue;
		check_req = 0;
		unsigned long before[MAXT];
		for (int i = 0; i < n; i++)
			before[i] = wakes[i];
		int late = -1;
		for (int tries = 0; tries < 500; tries++) {
			pthread_mutex_lock(&mu);
			gen++;
			pthread_cond_broadcast(&cv);
			pthread_mutex_unlock(&mu);
			late = -1;
			for (int i = 0; i < n && late < 0; i++)
				if (wakes[i] == before[i])
					late = i;
			if (late < 0)
				break;
			usleep(10000);
		}
		if (late >= 0)
			say("FAIL thread %d (tid %d) did not wake\n", late, (int)tids[late]);
		else if (bad_tid >= 0)
			say("FAIL thread %d has another tid\n", bad_tid);
		else
			say("PASS %d\n", n);
	}
}
