"""Which host addresses the box offers as WebRTC (ICE) candidates.

aioice gathers a host candidate for every interface address except loopback, and offers no setting to
change that. A browser on the box itself (the kiosk touch panel, or the demo page on 127.0.0.1) can then
only reach the box through an outward-facing address, and on a machine with no network at all, not at
all. ``offer_loopback()`` adds 127.0.0.1 to the gathered addresses (once, process-wide), so such a
browser connects over loopback; remote viewers simply fail that one candidate pair.
"""

from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    found = _original(use_ipv4, use_ipv6)
    return (["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else []) + found


def offer_loopback() -> None:
    """Make aioice also gather a 127.0.0.1 host candidate; idempotent."""
    aioice.ice.get_host_addresses = _with_loopback


def offers_loopback() -> bool:
    return aioice.ice.get_host_addresses is _with_loopback
