package main

import "testing"

func TestTallyFlow(t *testing.T) {
	tests := []struct {
		name    string
		sent    int
		refused map[int]bool
		got     []int
		want    flowTally
	}{
		{"all in order", 4, nil, []int{0, 1, 2, 3}, flowTally{}},
		{"a gap is lost", 4, nil, []int{0, 1, 3}, flowTally{lost: 1}},
		{"the tail not yet arrived is lost", 4, nil, []int{0, 1}, flowTally{lost: 2}},
		{"a refused send is not lost", 4, map[int]bool{2: true}, []int{0, 1, 3}, flowTally{}},
		{"a refused send that arrives anyway counts nothing", 3, map[int]bool{1: true}, []int{0, 1, 2}, flowTally{}},
		{"a resent message is a duplicate", 3, nil, []int{0, 1, 1, 2}, flowTally{duplicated: 1}},
		{"a late message is out of order", 4, nil, []int{0, 2, 1, 3}, flowTally{reordered: 1}},
		{"a replayed run is duplicates, not reorders", 3, nil, []int{0, 1, 2, 0, 1, 2}, flowTally{duplicated: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tallyFlow(tt.sent, tt.refused, tt.got); got != tt.want {
				t.Errorf("tallyFlow(%d, %v, %v) = %+v, want %+v", tt.sent, tt.refused, tt.got, got, tt.want)
			}
		})
	}
}
