/*
 * pgrp: a child left in the session its parent (the root) had before it called setsid():
 * that session's leader is alive outside the tree, so no restore can put the child back
 * in it, and a dump must refuse it by name. Usage: pgrp WORKDIR. Prints "READY <pid>"
 * once the root leads its own session; the child exits when the root is gone.
 */
#include "wl.h"

static int verify(void)
{
	return 1;
}

int main(void)
{
	wl_init();
	int root = getpid();
	int a = fork();
	if (a < 0)
		wl_die("fork");
	if (a == 0) {
		while (getppid() == root)
			wl_sleep_ms(20);
		_exit(0);
	}
	if (setsid() < 0)
		wl_die("setsid");
	wl_ready();
	for (;;) {
		wl_poll(verify, NULL);
		wl_sleep_ms(10);
	}
}
