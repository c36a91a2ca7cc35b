/*
 * timens: the clocks of a time namespace keep running on from where they were.
 * Usage: timens WORKDIR MONOTONIC_OFFSET_S BOOTTIME_OFFSET_S   (protocol in wl.h)
 * Started inside `unshare --time --monotonic M --boottime B`. Every 20 ms the main loop
 * reads CLOCK_MONOTONIC and CLOCK_BOOTTIME and notes the first step backwards or any
 * step of more than 60 s forwards (a dump and restore of the machine's load may stop it
 * for seconds, not for a minute): a restore into the host's time namespace would send
 * CLOCK_MONOTONIC back by the offset.
 * Checks: no such step seen; CLOCK_MONOTONIC and CLOCK_BOOTTIME are above their offsets
 * (the host's clocks on this machine are far below the offsets the test gives) and not
 * below the first readings.
 */
#include "wl.h"

#define JUMP_NS (60LL * 1000000000LL)

static long long mono0, boot0, mono_last, boot_last, mono_off, boot_off;
static char broken[256];

static long long now_ns(clockid_t c)
{
	struct timespec ts;
	if (clock_gettime(c, &ts))
		wl_die("clock_gettime(%d)", (int)c);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void step(void)
{
	long long m = now_ns(CLOCK_MONOTONIC), b = now_ns(CLOCK_BOOTTIME);
	if (!broken[0] && (m < mono_last || m - mono_last > JUMP_NS))
		snprintf(broken, sizeof(broken), "CLOCK_MONOTONIC stepped from %lld to %lld ns",
			 mono_last, m);
	if (!broken[0] && (b < boot_last || b - boot_last > JUMP_NS))
		snprintf(broken, sizeof(broken), "CLOCK_BOOTTIME stepped from %lld to %lld ns",
			 boot_last, b);
	mono_last = m;
	boot_last = b;
}

static int verify(void)
{
	step();
	WL_CHECK(!broken[0], "%s", broken);
	WL_CHECK(mono_last >= mono0 && boot_last >= boot0, "clocks below their first readings");
	WL_CHECK(mono_last / 1000000000LL > mono_off, "CLOCK_MONOTONIC %lld s: not past offset %lld s",
		 mono_last / 1000000000LL, mono_off);
	WL_CHECK(boot_last / 1000000000LL > boot_off, "CLOCK_BOOTTIME %lld s: not past offset %lld s",
		 boot_last / 1000000000LL, boot_off);
	return 1;
}

static void corrupt(void)
{
	snprintf(broken, sizeof(broken), "corrupted on request");
}

int main(int argc, char **argv)
{
	if (argc < 4)
		wl_die("usage: timens WORKDIR MONOTONIC_OFFSET_S BOOTTIME_OFFSET_S");
	wl_init();
	mono_off = atoll(argv[2]);
	boot_off = atoll(argv[3]);
	mono0 = mono_last = now_ns(CLOCK_MONOTONIC);
	boot0 = boot_last = now_ns(CLOCK_BOOTTIME);
	if (mono0 / 1000000000LL <= mono_off)
		wl_die("CLOCK_MONOTONIC %lld s is not past the offset %lld s: not in the namespace",
		       mono0 / 1000000000LL, mono_off);
	wl_ready();
	for (;;) {
		step();
		wl_poll(verify, corrupt);
		wl_sleep_ms(20);
	}
}
