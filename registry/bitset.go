package registry

import (
	"iter"
	"math/bits"
)

// bitset is a set of owner indices (owner.idx).
type bitset []uint64

func (b bitset) has(i int) bool {
	w := i >> 6
	return w < len(b) && b[w]&(1<<(i&63)) != 0
}

// set puts i in b (on) or takes it out.
func (b *bitset) set(i int, on bool) {
	w := i >> 6
	switch {
	case on:
		for len(*b) <= w {
			*b = append(*b, 0)
		}
		(*b)[w] |= 1 << (i & 63)
	case w < len(*b):
		(*b)[w] &^= 1 << (i & 63)
	}
}

// count returns how many indices b holds.
func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// common yields, in increasing order, the indices b and c both hold.
func (b bitset) common(c bitset) iter.Seq[int] {
	return func(yield func(int) bool) {
		for w := range min(len(b), len(c)) {
			for word := b[w] & c[w]; word != 0; word &= word - 1 {
				if !yield(w<<6 | bits.TrailingZeros64(word)) {
					return
				}
			}
		}
	}
}

// without yields, in increasing order, the indices b holds and c does
// not.
func (b bitset) without(c bitset) iter.Seq[int] {
	return func(yield func(int) bool) {
		for w, word := range b {
			if w < len(c) {
				word &^= c[w]
			}
			for ; word != 0; word &= word - 1 {
				if !yield(w<<6 | bits.TrailingZeros64(word)) {
					return
				}
			}
		}
	}
}

// intersects reports whether b and c have an index in common.
func (b bitset) intersects(c bitset) bool {
	for i := range min(len(b), len(c)) {
		if b[i]&c[i] != 0 {
			return true
		}
	}
	return false
}

// newIdx gives a new owner its index: one given back, or the next.
// r.mu is held.
func (r *Registry) newIdx() int {
	if n := len(r.idxFree); n > 0 {
		i := r.idxFree[n-1]
		r.idxFree = r.idxFree[:n-1]
		return i
	}
	r.idxNext++
	r.byIdx = append(r.byIdx, nil)
	return r.idxNext - 1
}

// forgetIdx gives back the index of o, about to be forgotten: no owner
// names it any more. r.mu is held.
func (r *Registry) forgetIdx(o *owner) {
	for _, w := range r.owners {
		w.names.set(o.idx, false)
	}
	for _, ls := range r.links {
		for _, l := range ls {
			l.forget(o) // (its idx goes to another owner)
		}
	}
	r.idxFree = append(r.idxFree, o.idx)
	r.byIdx[o.idx] = nil
	r.above.set(o.idx, false)
}

// nameBit keeps w.names in step with w.peers after w.peers[id] became
// inc (0: removed). r.mu is held.
func (r *Registry) nameBit(w *owner, id string, inc uint64) {
	if x := r.owners[id]; x != nil {
		w.names.set(x.idx, inc != 0 && inc == x.inc)
	}
}

// renamed keeps every owner's names in step after o's run changed: those
// that name o name its new run, or no longer name a run it has. r.mu is
// held.
func (r *Registry) renamed(o *owner) {
	for _, w := range r.owners {
		inc, ok := w.peers[o.id]
		w.names.set(o.idx, ok && inc == o.inc)
	}
}
