/*
 * UDP sockets that joined multicast groups on lo, every way the API allows: an IPv4
 * socket with a plain join by interface address (IP_ADD_MEMBERSHIP), a source-specific
 * join of two sources (IP_ADD_SOURCE_MEMBERSHIP: INCLUDE mode), a join by interface
 * index with an EXCLUDE source filter (MCAST_JOIN_GROUP + MCAST_MSFILTER), a group
 * joined and left again (must not come back), IP_MULTICAST_ALL off; an IPv6 socket with
 * IPV6_ADD_MEMBERSHIP, MCAST_JOIN_SOURCE_GROUP and an IPv4 group joined through SOL_IP.
 * The check asks the socket itself for each group (getsockopt MCAST_MSFILTER: mode and
 * sources). Groups are made of the pid so that parallel runs do not share them.
 */
#include "wl.h"
#include <arpa/inet.h>
#include <net/if.h>

static int a, b;
static unsigned lo;
static char g1[32], g2[32], g3[32], g4[32], g5[32], h1[64], h2[64];

struct want {
	int *sock;
	int level;
	const char *group;
	unsigned mode;
	const char *src[2];
	int nsrc;
};

static void fill(struct sockaddr_storage *ss, const char *addr)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (void *)ss;
		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, addr, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (void *)ss;
		s4->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &s4->sin_addr);
	}
}

static int same(const struct sockaddr_storage *x, const char *addr)
{
	struct sockaddr_storage y;
	fill(&y, addr);
	if (x->ss_family != y.ss_family)
		return 0;
	if (x->ss_family == AF_INET)
		return ((struct sockaddr_in *)x)->sin_addr.s_addr ==
		       ((struct sockaddr_in *)&y)->sin_addr.s_addr;
	return !memcmp(&((struct sockaddr_in6 *)x)->sin6_addr,
		       &((struct sockaddr_in6 *)&y)->sin6_addr, 16);
}

/* The socket's filter for `group` on lo: -1 not joined, else mode; sources in gf. */
static int ask(int s, int level, const char *group, struct group_filter *gf, size_t room)
{
	memset(gf, 0, GROUP_FILTER_SIZE(room));
	gf->gf_interface = lo;
	fill(&gf->gf_group, group);
	gf->gf_numsrc = room;
	socklen_t len = GROUP_FILTER_SIZE(room);
	if (getsockopt(s, level, MCAST_MSFILTER, gf, &len))
		return errno == EADDRNOTAVAIL ? -1 : -2;
	return gf->gf_fmode;
}

static int check_one(const struct want *w)
{
	char buf[GROUP_FILTER_SIZE(8)];
	struct group_filter *gf = (void *)buf;
	int mode = ask(*w->sock, w->level, w->group, gf, 8);
	WL_CHECK(mode >= 0, "group %s: %s", w->group, mode == -1 ? "not joined" : strerror(errno));
	WL_CHECK((unsigned)mode == w->mode && (int)gf->gf_numsrc == w->nsrc,
		 "group %s: mode %d with %u sources, want %u with %d", w->group, mode,
		 gf->gf_numsrc, w->mode, w->nsrc);
	for (int i = 0; i < w->nsrc; i++) {
		int found = 0;
		for (unsigned j = 0; j < gf->gf_numsrc; j++)
			found |= same(&gf->gf_slist[j], w->src[i]);
		WL_CHECK(found, "group %s: source %s missing", w->group, w->src[i]);
	}
	return 1;
}

static int verify(void)
{
	struct want wants[] = {
		{ &a, SOL_IP, g1, MCAST_EXCLUDE, { 0 }, 0 },
		{ &a, SOL_IP, g2, MCAST_INCLUDE, { "127.0.0.1", "127.0.0.2" }, 2 },
		{ &a, SOL_IP, g3, MCAST_EXCLUDE, { "10.9.9.9" }, 1 },
		{ &b, SOL_IPV6, h1, MCAST_EXCLUDE, { 0 }, 0 },
		{ &b, SOL_IPV6, h2, MCAST_INCLUDE, { "::1" }, 1 },
		{ &b, SOL_IP, g5, MCAST_EXCLUDE, { 0 }, 0 },
	};
	for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++)
		if (!check_one(&wants[i]))
			return 0;
	char buf[GROUP_FILTER_SIZE(1)];
	WL_CHECK(ask(a, SOL_IP, g4, (void *)buf, 1) == -1, "left group %s joined again", g4);
	WL_CHECK(ask(b, SOL_IP, g1, (void *)buf, 1) == -1, "group %s joined by the v6 socket", g1);
	int all = 1;
	socklen_t len = sizeof(all);
	WL_CHECK(!getsockopt(a, SOL_IP, IP_MULTICAST_ALL, &all, &len) && all == 0,
		 "IP_MULTICAST_ALL is %d", all);
	return 1;
}

static void corrupt(void)
{
	struct ip_mreqn m = { 0 };
	inet_pton(AF_INET, g1, &m.imr_multiaddr);
	m.imr_ifindex = lo;
	setsockopt(a, SOL_IP, IP_DROP_MEMBERSHIP, &m, sizeof(m));
}

static void group_source(int s, int level, const char *group, const char *src, int join)
{
	struct group_source_req r = { .gsr_interface = lo };
	fill(&r.gsr_group, group);
	fill(&r.gsr_source, src);
	if (setsockopt(s, level, join, &r, sizeof(r)))
		wl_die("source join %s from %s", group, src);
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc < 2)
		return 2;
	wl_init();
	unsigned p = getpid();
	lo = if_nametoindex("lo");
	snprintf(g1, sizeof(g1), "239.%u.%u.%u", (p >> 16) & 255, (p >> 8) & 255, p & 255);
	snprintf(g2, sizeof(g2), "238.%u.%u.%u", (p >> 16) & 255, (p >> 8) & 255, p & 255);
	snprintf(g3, sizeof(g3), "237.%u.%u.%u", (p >> 16) & 255, (p >> 8) & 255, p & 255);
	snprintf(g4, sizeof(g4), "236.%u.%u.%u", (p >> 16) & 255, (p >> 8) & 255, p & 255);
	snprintf(g5, sizeof(g5), "235.%u.%u.%u", (p >> 16) & 255, (p >> 8) & 255, p & 255);
	snprintf(h1, sizeof(h1), "ff15::%x:%x", p >> 16, p & 0xffff);
	snprintf(h2, sizeof(h2), "ff35::%x:%x", p >> 16, p & 0xffff);
	a = socket(AF_INET, SOCK_DGRAM, 0);
	b = socket(AF_INET6, SOCK_DGRAM, 0);
	if (a < 0 || b < 0 || !lo)
		wl_die("socket");
	struct ip_mreqn m = { 0 };
	inet_pton(AF_INET, g1, &m.imr_multiaddr);
	inet_pton(AF_INET, "127.0.0.1", &m.imr_address);
	if (setsockopt(a, SOL_IP, IP_ADD_MEMBERSHIP, &m, sizeof(m)))
		wl_die("IP_ADD_MEMBERSHIP %s", g1);
	struct ip_mreq_source ms = { 0 };
	inet_pton(AF_INET, g2, &ms.imr_multiaddr);
	inet_pton(AF_INET, "127.0.0.1", &ms.imr_interface);
	for (int i = 1; i <= 2; i++) {
		char src[16];
		snprintf(src, sizeof(src), "127.0.0.%d", i);
		inet_pton(AF_INET, src, &ms.imr_sourceaddr);
		if (setsockopt(a, SOL_IP, IP_ADD_SOURCE_MEMBERSHIP, &ms, sizeof(ms)))
			wl_die("IP_ADD_SOURCE_MEMBERSHIP %s", src);
	}
	struct group_req gr = { .gr_interface = lo };
	fill(&gr.gr_group, g3);
	if (setsockopt(a, SOL_IP, MCAST_JOIN_GROUP, &gr, sizeof(gr)))
		wl_die("MCAST_JOIN_GROUP %s", g3);
	group_source(a, SOL_IP, g3, "10.9.9.9", MCAST_BLOCK_SOURCE);
	fill(&gr.gr_group, g4);
	if (setsockopt(a, SOL_IP, MCAST_JOIN_GROUP, &gr, sizeof(gr)) ||
	    setsockopt(a, SOL_IP, MCAST_LEAVE_GROUP, &gr, sizeof(gr)))
		wl_die("join and leave %s", g4);
	int off = 0;
	if (setsockopt(a, SOL_IP, IP_MULTICAST_ALL, &off, sizeof(off)))
		wl_die("IP_MULTICAST_ALL");
	struct ipv6_mreq m6 = { .ipv6mr_interface = lo };
	inet_pton(AF_INET6, h1, &m6.ipv6mr_multiaddr);
	if (setsockopt(b, SOL_IPV6, IPV6_ADD_MEMBERSHIP, &m6, sizeof(m6)))
		wl_die("IPV6_ADD_MEMBERSHIP %s", h1);
	group_source(b, SOL_IPV6, h2, "::1", MCAST_JOIN_SOURCE_GROUP);
	struct ip_mreqn m5 = { .imr_ifindex = lo };
	inet_pton(AF_INET, g5, &m5.imr_multiaddr);
	if (setsockopt(b, SOL_IP, IP_ADD_MEMBERSHIP, &m5, sizeof(m5)))
		wl_die("IP_ADD_MEMBERSHIP %s on the IPv6 socket", g5);
	if (!verify())
		wl_die("not as set up: %s", wl_reason);
	wl_ready();
	for (;;) {
		wl_sleep_ms(20);
		wl_poll(verify, corrupt);
	}
}
