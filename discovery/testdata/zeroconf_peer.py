"""A python-zeroconf peer for discovery's interop tests
(mdns_zeroconf_linux_test.go).

Run it with Debian's /usr/bin/python3 (package python3-zeroconf), inside
the test's private network namespace only. It writes one JSON object per
line on stdout:

  zeroconf_peer.py IFACE browse TYPE...
      Browses each type until stdin closes. Prints {"ev": "added" |
      "removed" | "updated", "type", "name"} for each change, and for an
      added or updated service (not for service type enumeration,
      _services._dns-sd._udp.local.) {"ev": "resolved" | "unresolved", ...}
      once it is resolved from what the browse brought.

  zeroconf_peer.py IFACE resolve TYPE NAME TIMEOUT_MS
      Resolves one service with an empty cache, so that every record comes
      from an answer to its own queries (SRV, TXT, A, AAAA by name), prints
      {"ev": "resolved" | "unresolved", ...} and exits.

  zeroconf_peer.py IFACE register TYPE NAME PORT SERVER ADDR TXT...
      Registers a service (probing first, then announcing), prints {"ev":
      "registered", "name"} once the announcements are sent, answers
      queries until stdin closes, then unregisters it (a goodbye) and
      exits. TXT strings are given as they go on the wire.

IFACE is an IPv4 address to run on (IPv4 only), or v6:INDEX, the index of
an interface to run on over IPv6 only.
"""

import json
import sys
import threading

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

ENUMERATION = "_services._dns-sd._udp.local."

out_lock = threading.Lock()


def emit(**fields):
    with out_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def open_zeroconf(iface):
    if iface.startswith("v6:"):
        return Zeroconf(interfaces=[int(iface[3:])], ip_version=IPVersion.V6Only)
    return Zeroconf(interfaces=[iface], ip_version=IPVersion.V4Only)


def txt_strings(text):
    """Splits TXT rdata into its strings, as they were on the wire."""
    strs, i = [], 0
    while i < len(text):
        n = text[i]
        strs.append(text[i + 1 : i + 1 + n].decode("utf-8", "backslashreplace"))
        i += 1 + n
    return strs


def describe(ev, type_, name, info):
    if info is None:
        emit(ev="unresolved", type=type_, name=name)
        return
    emit(
        ev=ev,
        type=type_,
        name=info.name,
        server=info.server,
        port=info.port,
        addresses=info.parsed_addresses(IPVersion.All),
        txt=txt_strings(info.text or b""),
    )


def browse(zc, types):
    def resolve(type_, name):
        describe("resolved", type_, name, zc.get_service_info(type_, name, timeout=3000))

    def on_change(zeroconf, service_type, name, state_change):
        ev = {
            ServiceStateChange.Added: "added",
            ServiceStateChange.Removed: "removed",
            ServiceStateChange.Updated: "updated",
        }[state_change]
        emit(ev=ev, type=service_type, name=name)
        if ev != "removed" and service_type != ENUMERATION:
            # Handlers run on the browser's thread: resolve on another.
            threading.Thread(target=resolve, args=(service_type, name), daemon=True).start()

    browser = ServiceBrowser(zc, types, handlers=[on_change])
    sys.stdin.read()
    browser.cancel()


def register(zc, type_, name, port, server, addr, txt):
    text = b"".join(bytes([len(s)]) + s for s in (t.encode() for t in txt))
    info = ServiceInfo(type_, name, port=port, properties=text, server=server, parsed_addresses=[addr])
    zc.register_service(info)
    emit(ev="registered", name=info.name)
    sys.stdin.read()
    zc.unregister_service(info)


def main(argv):
    iface, mode, args = argv[1], argv[2], argv[3:]
    zc = open_zeroconf(iface)
    try:
        if mode == "browse":
            browse(zc, args)
        elif mode == "resolve":
            type_, name, timeout = args
            describe("resolved", type_, name, zc.get_service_info(type_, name, timeout=int(timeout)))
        elif mode == "register":
            type_, name, port, server, addr = args[:5]
            register(zc, type_, name, int(port), server, addr, args[5:])
        else:
            sys.exit("unknown mode " + mode)
    finally:
        zc.close()


if __name__ == "__main__":
    main(sys.argv)
