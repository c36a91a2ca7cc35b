/*
 * nlsock: netlink sockets, each checked against what it was set up with.
 *   route    NETLINK_ROUTE, autobound (the kernel picks the port id) with a group of the
 *            first 32 (RTNLGRP_DECnet_IFADDR: never sent to) given to bind and one above
 *            32 joined (RTNLGRP_MCTP_IFADDR: never sent to either, so nothing queues),
 *            NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK and NETLINK_NO_ENOBUFS on;
 *   route2   NETLINK_ROUTE bound to a port id the program chose;
 *   generic  NETLINK_GENERIC, autobound by a connect(2) to the kernel;
 *   uevent   NETLINK_KOBJECT_UEVENT bound to a chosen port id, no group.
 * A check: each socket's protocol, port id, groups and flags are as set up, and route,
 * route2 and generic still talk to the kernel: an RTM_GETLINK of lo (answered with its
 * RTM_NEWLINK, addressed to the socket's port id, with the request's sequence number), a
 * CTRL_CMD_GETFAMILY of "nlctrl".
 */
#include "wl.h"
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

enum { ROUTE, ROUTE2, GENERIC, UEVENT, N };
static const char *names[N] = { "route", "route2", "generic", "uevent" };
static const int protos[N] = { NETLINK_ROUTE, NETLINK_ROUTE, NETLINK_GENERIC,
				NETLINK_KOBJECT_UEVENT };
static int fds[N];
static uint32_t ports[N], groups[N];
static uint32_t seq = 100;

static int addr_of(int fd, uint32_t *port, uint32_t *grp)
{
	struct sockaddr_nl a;
	socklen_t l = sizeof(a);
	if (getsockname(fd, (void *)&a, &l))
		return -1;
	*port = a.nl_pid;
	*grp = a.nl_groups;
	return 0;
}

static int opt(int fd, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_NETLINK, name, &v, &l))
		return -1;
	return v;
}

/* Sends `req` (its nlmsghdr filled in here) and waits for the answer to it. */
static int ask(int k, struct nlmsghdr *req, uint16_t want_type, const char **why)
{
	static char buf[32768];
	req->nlmsg_seq = ++seq;
	req->nlmsg_pid = 0;
	if (send(fds[k], req, req->nlmsg_len, 0) != (ssize_t)req->nlmsg_len) {
		*why = "send failed";
		return 0;
	}
	struct pollfd p = { fds[k], POLLIN, 0 };
	if (poll(&p, 1, 10000) != 1) {
		*why = "no answer in 10 s";
		return 0;
	}
	ssize_t r = recv(fds[k], buf, sizeof(buf), MSG_DONTWAIT);
	struct nlmsghdr *h = (void *)buf;
	if (r < (ssize_t)sizeof(*h) || !NLMSG_OK(h, (size_t)r)) {
		*why = "a short answer";
		return 0;
	}
	if (h->nlmsg_seq != seq || h->nlmsg_pid != ports[k] || h->nlmsg_type != want_type) {
		*why = "an answer that is not to this request";
		return 0;
	}
	/* The rest of a multi-part answer, if any, is drained. */
	while (recv(fds[k], buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	return 1;
}

static int ask_link(int k, const char **why)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { 0 };
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = RTM_GETLINK;
	req.h.nlmsg_flags = NLM_F_REQUEST;
	req.i.ifi_family = AF_UNSPEC;
	req.i.ifi_index = 1;
	return ask(k, &req.h, RTM_NEWLINK, why);
}

static int ask_family(int k, const char **why)
{
	struct {
		struct nlmsghdr h;
		struct genlmsghdr g;
		struct nlattr a;
		char name[8];
	} req = { 0 };
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = GENL_ID_CTRL;
	req.h.nlmsg_flags = NLM_F_REQUEST;
	req.g.cmd = CTRL_CMD_GETFAMILY;
	req.g.version = 1;
	req.a.nla_len = sizeof(req.a) + sizeof("nlctrl");
	req.a.nla_type = CTRL_ATTR_FAMILY_NAME;
	strcpy(req.name, "nlctrl");
	return ask(k, &req.h, GENL_ID_CTRL, why);
}

static int verify(void)
{
	for (int k = 0; k < N; k++) {
		uint32_t port, grp;
		int proto = -1;
		socklen_t l = sizeof(proto);
		WL_CHECK(addr_of(fds[k], &port, &grp) == 0, "%s: getsockname: %s", names[k],
			 strerror(errno));
		WL_CHECK(port == ports[k] && grp == groups[k],
			 "%s: port %u groups %#x, want port %u groups %#x", names[k], port, grp,
			 ports[k], groups[k]);
		getsockopt(fds[k], SOL_SOCKET, SO_PROTOCOL, &proto, &l);
		WL_CHECK(proto == protos[k], "%s: protocol %d", names[k], proto);
	}
	uint32_t m[4] = { 0 };
	socklen_t l = sizeof(m);
	WL_CHECK(getsockopt(fds[ROUTE], SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, m, &l) == 0,
		 "route: NETLINK_LIST_MEMBERSHIPS: %s", strerror(errno));
	uint32_t want0 = 1u << (RTNLGRP_DECnet_IFADDR - 1), want1 = 1u << (RTNLGRP_MCTP_IFADDR - 33);
	WL_CHECK(m[0] == want0 && m[1] == want1 && m[2] == 0 && m[3] == 0,
		 "route: memberships %#x %#x %#x, want %#x %#x 0", m[0], m[1], m[2], want0, want1);
	WL_CHECK(opt(fds[ROUTE], NETLINK_EXT_ACK) == 1 && opt(fds[ROUTE], NETLINK_GET_STRICT_CHK) == 1 &&
			 opt(fds[ROUTE], NETLINK_NO_ENOBUFS) == 1,
		 "route: flags ext_ack %d strict %d no_enobufs %d", opt(fds[ROUTE], NETLINK_EXT_ACK),
		 opt(fds[ROUTE], NETLINK_GET_STRICT_CHK), opt(fds[ROUTE], NETLINK_NO_ENOBUFS));
	WL_CHECK(opt(fds[ROUTE2], NETLINK_EXT_ACK) == 0, "route2: ext_ack set");
	const char *why = "";
	WL_CHECK(ask_link(ROUTE, &why), "route: RTM_GETLINK: %s", why);
	WL_CHECK(ask_link(ROUTE2, &why), "route2: RTM_GETLINK: %s", why);
	WL_CHECK(ask_family(GENERIC, &why), "generic: CTRL_CMD_GETFAMILY: %s", why);
	return 1;
}

static void corrupt(void)
{
	ports[ROUTE2]++;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	wl_init();
	for (int k = 0; k < N; k++) {
		fds[k] = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protos[k]);
		if (fds[k] < 0)
			wl_die("socket %s", names[k]);
	}
	int one = 1;
	struct sockaddr_nl a = { .nl_family = AF_NETLINK };
	a.nl_groups = 1u << (RTNLGRP_DECnet_IFADDR - 1);
	int g = RTNLGRP_MCTP_IFADDR;
	if (bind(fds[ROUTE], (void *)&a, sizeof(a)) ||
	    setsockopt(fds[ROUTE], SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)) ||
	    setsockopt(fds[ROUTE], SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) ||
	    setsockopt(fds[ROUTE], SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof(one)) ||
	    setsockopt(fds[ROUTE], SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one)))
		wl_die("route setup");
	a.nl_groups = 0;
	a.nl_pid = 0x40000000u | (uint32_t)getpid();
	if (bind(fds[ROUTE2], (void *)&a, sizeof(a)))
		wl_die("route2 bind");
	a.nl_pid = 0x50000000u | (uint32_t)getpid();
	if (bind(fds[UEVENT], (void *)&a, sizeof(a)))
		wl_die("uevent bind");
	for (int k = 0; k < N; k++)
		if (k != GENERIC && addr_of(fds[k], &ports[k], &groups[k]))
			wl_die("getsockname");
	/* generic: autobound by a connect to the kernel */
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (connect(fds[GENERIC], (void *)&kernel, sizeof(kernel)))
		wl_die("generic connect");
	if (addr_of(fds[GENERIC], &ports[GENERIC], &groups[GENERIC]) || !ports[GENERIC])
		wl_die("generic: not autobound");
	const char *why = "";
	if (!ask_family(GENERIC, &why))
		wl_die("generic: %s", why);
	wl_ready();
	for (;;) {
		wl_sleep_ms(5);
		wl_poll(verify, corrupt);
	}
}
