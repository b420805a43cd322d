/* LD_PRELOAD shim for the tests' Janus: report the loopback interface as an ordinary one.

   Janus gathers ICE candidates only on interfaces without IFF_LOOPBACK (src/ice.c, "Skip loopback
   interfaces"), so in the tests' network namespace, whose only interface is loopback, it has no candidate
   at all and every WebRTC negotiation fails ("Error setting ICE locally"). With this shim Janus offers
   127.0.0.1. Built by tests/janus_fixture.py with gcc; used for that Janus process only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>

int getifaddrs(struct ifaddrs **ifap) {
	static int (*real)(struct ifaddrs **) = 0;
	if(!real)
		real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
	int r = real(ifap);
	if(r == 0)
		for(struct ifaddrs *i = *ifap; i; i = i->ifa_next)
			i->ifa_flags &= ~IFF_LOOPBACK;
	return r;
}
