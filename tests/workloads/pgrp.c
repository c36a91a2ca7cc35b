/*
 * pgrp: a child in its sibling's process group (what a shell makes of a pipeline), which
 * a dump must refuse by name. Usage: pgrp WORKDIR. Prints "READY <pid>" once child B is
 * in child A's group; the children exit when the root is gone.
 */
#include "wl.h"

static int child(int root)
{
	int pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		while (getppid() == root)
			wl_sleep_ms(20);
		_exit(0);
	}
	return pid;
}

static int verify(void)
{
	return 1;
}

int main(void)
{
	wl_init();
	int root = getpid();
	int a = child(root);
	if (setpgid(a, a))
		wl_die("setpgid A");
	int b = child(root);
	if (setpgid(b, a))
		wl_die("setpgid B");
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		wl_sleep_ms(10);
	}
}
