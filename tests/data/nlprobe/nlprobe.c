/* A program that links libnl-3 and libnl-genl-3 statically, as hostapd will: the
   test recipe "nlprobe" (tests/test_libnl.py) builds it against libnl's staging. */
#include <stdio.h>
#include <netlink/netlink.h>
#include <netlink/genl/genl.h>
#include <netlink/genl/ctrl.h>

int main(void)
{
	struct nl_sock *sock = nl_socket_alloc();
	if (!sock || genl_connect(sock) < 0) {
		fprintf(stderr, "nlprobe: no generic netlink\n");
		return 1;
	}
	printf("nlprobe: nl80211 family %d\n", genl_ctrl_resolve(sock, "nl80211"));
	nl_socket_free(sock);
	return 0;
}
