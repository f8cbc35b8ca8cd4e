package transport

// Prefer returns the one of two links to the same peer that both ends keep;
// the caller closes the other. Both ends reach the same answer from the
// hellos alone, with no extra round trip:
//
//  1. links to two runs of the peer (it restarted with the same id): the
//     link to the later run wins, whoever dialed — only this end holds
//     both, since the later run never had the earlier one's link;
//  2. links dialed by different nodes: the link dialed by the lower id wins
//     (ids compared as byte strings);
//  3. links dialed by the same node in different runs: the later run wins
//     (the earlier run is gone);
//  4. links dialed by the same run: the later dial wins;
//  5. otherwise the lower link id wins.
func Prefer(a, b *Link) *Link {
	if ai, bi := a.remote.Incarnation, b.remote.Incarnation; ai != bi {
		if ai > bi {
			return a
		}
		return b
	}
	if preferFirst(a.Dialer(), b.Dialer(), a.id, b.id) {
		return a
	}
	return b
}

func preferFirst(a, b Hello, aID, bID uint64) bool {
	switch {
	case a.ID != b.ID:
		return a.ID < b.ID
	case a.Incarnation != b.Incarnation:
		return a.Incarnation > b.Incarnation
	case a.DialSeq != b.DialSeq:
		return a.DialSeq > b.DialSeq
	}
	return aID <= bID
}
