package lan

// NamespacePath returns the /proc path of a host's namespace, for tests.
func NamespacePath(h *Host) string { return h.ns.Path() }
