/*
 * pidhold: holds one pid so that a restore finds it taken.
 * Usage: pidhold WORKDIR PID
 * Forks (clone3 with set_tid = PID, needs root) a child that only pauses, prints
 * "READY <PID>", and waits for it; kill the child and pidhold exits.
 */
#include "wl.h"
#include <linux/sched.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		wl_die("usage");
	pid_t want = atoi(argv[2]);
	struct clone_args args;
	memset(&args, 0, sizeof(args));
	args.exit_signal = SIGCHLD;
	args.set_tid = (uint64_t)(uintptr_t)&want;
	args.set_tid_size = 1;
	long pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0)
		wl_die("clone3 with pid %d", want);
	if (pid == 0) {
		for (;;)
			pause();
	}
	printf("READY %ld\n", pid);
	fflush(stdout);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return 0;
}
