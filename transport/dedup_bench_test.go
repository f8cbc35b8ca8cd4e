package transport

import "testing"

// BenchmarkPrefer decides between two links to one peer, for each rule of
// the duplicate order.
func BenchmarkPrefer(b *testing.B) {
	mk := func(dialer Hello, id uint64) *Link {
		return &Link{local: dialer, dialed: true, id: id}
	}
	a := Hello{ID: "4a7f0c9e-0c2b-4a8e-b1b5-2d6a3f1e9c01", Incarnation: 100, DialSeq: 3}
	tests := []struct {
		name string
		x, y *Link
	}{
		{"different dialers", mk(a, 1), mk(Hello{ID: "9b2e1d4c-7f3a-4e6b-8c9d-0a1b2c3d4e5f", Incarnation: 100, DialSeq: 3}, 2)},
		{"different runs", mk(a, 1), mk(Hello{ID: a.ID, Incarnation: 200, DialSeq: 1}, 2)},
		{"different dials", mk(a, 1), mk(Hello{ID: a.ID, Incarnation: 100, DialSeq: 4}, 2)},
		{"link ids", mk(a, 1), mk(a, 2)},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if Prefer(tt.x, tt.y) == nil {
					b.Fatal("no link")
				}
			}
		})
	}
}
