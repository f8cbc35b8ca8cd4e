package registry

import "testing"

func TestBasicTwoNodes(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	connectSynced(t, a, b)
	rec := a.register(t, "web@1.0.0", 80, map[string]string{"k": "v"})
	waitFor(t, "b sees it", func() bool { return b.has(t, rec.ID) })
	if err := a.Free(rec.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b frees it", func() bool { return !b.has(t, rec.ID) })
}
