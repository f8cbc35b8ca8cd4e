package lan

import "os/exec"

// Command returns a command that runs name on h, in its network
// namespace: for the interop peers a test runs on a host beside or
// instead of harness nodes (avahi-daemon, see internal/testutil/avahi).
// The LAN does not track it: the caller starts it with netns.Spawn and a
// parent-death signal, and kills and waits for it before the test ends
// (a t.Cleanup registered after New runs before the LAN's teardown).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return h.ns.Command(name, args...)
}
