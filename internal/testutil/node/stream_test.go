package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// stream-send's arguments, as Proc.StreamSend writes them, read back.
func TestParseStreamSend(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		n     int64
		every time.Duration
		bad   bool
	}{
		{args: []string{"p", "copy", "100"}, n: 100},
		{args: []string{"p", "copy", "100", (50 * time.Millisecond).String()}, n: 100, every: 50 * time.Millisecond},
		{args: []string{"p", "copy", "0", "0s"}},
		{args: []string{"p", "copy"}, bad: true},
		{args: []string{"p", "copy", "-1"}, bad: true},
		{args: []string{"p", "copy", "1x"}, bad: true},
		{args: []string{"p", "copy", "1", "soon"}, bad: true},
		{args: []string{"p", "copy", "1", "1s", "more"}, bad: true},
	} {
		peer, protocol, n, every, err := parseStreamSend(tc.args)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
			continue
		}
		if err != nil || peer != "p" || protocol != "copy" || n != tc.n || every != tc.every {
			t.Errorf("%q: %q %q %d %v, %v", tc.args, peer, protocol, n, every, err)
		}
	}
}

// What stream-send writes is n bytes whose sum is PatternSum(n), whatever
// n is against StreamChunk, and a different n gives a different sum.
func TestStreamWritePattern(t *testing.T) {
	for _, n := range []int64{0, 1, StreamChunk, 3*StreamChunk + 7} {
		t.Run(strconv.FormatInt(n, 10), func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			read := make(chan string, 1)
			go func() {
				h := sha256.New()
				io.Copy(h, b)
				read <- hex.EncodeToString(h.Sum(nil))
			}()
			s := &streams{ctx: context.Background()}
			h := sha256.New()
			written, err := s.write(a, h, n, time.Microsecond)
			a.Close()
			if err != nil || written != n {
				t.Fatalf("wrote %d of %d: %v", written, n, err)
			}
			want := PatternSum(n)
			if got := <-read; got != want || hex.EncodeToString(h.Sum(nil)) != want {
				t.Errorf("read sum %s, written sum %x, PatternSum %s", got, h.Sum(nil), want)
			}
			if PatternSum(n+1) == want {
				t.Errorf("PatternSum(%d) = PatternSum(%d)", n+1, n)
			}
		})
	}
}
