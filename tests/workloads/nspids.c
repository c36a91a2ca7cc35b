/*
 * nspids: the init of a pid namespace nested inside a container (or below the host's),
 * checking its pids at every level.
 * Usage: nspids WORKDIR  (started as pid 1 of a fresh pid namespace, e.g. by
 * `unshare --pid --fork`, with the enclosing namespace's /proc mounted).
 * It forks a child (pid 2 there). Both remember what they saw at start: their own pid
 * (getpid), their parent's (getppid: 0 for the init, whose parent is outside; 1 for the
 * child) and their pid in the enclosing namespace (/proc/self, which that /proc names
 * in its own namespace's numbers). The child checks itself every 20 ms and exits 3 on a
 * difference. Prints "OUTER <init's outer> <child's pid> <child's outer>" then READY.
 * SIGUSR1: the init checks its own pids, that the child is still its child and runs,
 * and the child's NSpid as the enclosing /proc shows it.
 */
#include "wl.h"
#include <sys/wait.h>

static pid_t my_pid, my_ppid, my_outer, child, child_outer;

static pid_t proc_self(void)
{
	char buf[32] = { 0 };
	if (readlink("/proc/self", buf, sizeof(buf) - 1) < 0)
		return -1;
	return atoi(buf);
}

static int verify(void)
{
	WL_CHECK(getpid() == my_pid, "getpid %d, was %d", (int)getpid(), (int)my_pid);
	WL_CHECK(getppid() == my_ppid, "getppid %d, was %d", (int)getppid(), (int)my_ppid);
	WL_CHECK(proc_self() == my_outer, "/proc/self %d, was %d", (int)proc_self(),
		 (int)my_outer);
	int st;
	pid_t w = waitpid(child, &st, WNOHANG);
	WL_CHECK(w == 0, "child %d: waitpid %d status %#x", (int)child, (int)w, st);
	char path[64], want[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)child_outer);
	snprintf(want, sizeof(want), "NSpid:\t%d\t%d\n", (int)child_outer, (int)child);
	FILE *f = fopen(path, "r");
	WL_CHECK(f, "open %s: %s", path, strerror(errno));
	int found = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "NSpid:", 6))
			found = !strcmp(line, want);
	fclose(f);
	WL_CHECK(found, "%s: no line %s", path, want);
	return 1;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	my_pid = getpid();
	my_ppid = getppid();
	my_outer = proc_self();
	if (my_pid != 1 || my_ppid != 0 || my_outer <= 1)
		wl_die("not the init of a nested pid namespace: pid %d ppid %d outer %d",
		       (int)my_pid, (int)my_ppid, (int)my_outer);
	int ready[2];
	if (pipe(ready))
		wl_die("pipe");
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		pid_t pid = getpid(), outer = proc_self();
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (write(ready[1], &outer, sizeof(outer)) != sizeof(outer))
			_exit(2);
		for (;;) {
			if (getpid() != pid || getppid() != 1 || proc_self() != outer)
				_exit(3);
			wl_sleep_ms(20);
		}
	}
	if (read(ready[0], &child_outer, sizeof(child_outer)) != sizeof(child_outer))
		wl_die("child's outer pid");
	printf("OUTER %d %d %d\n", (int)my_outer, (int)child, (int)child_outer);
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		wl_sleep_ms(10);
	}
}
