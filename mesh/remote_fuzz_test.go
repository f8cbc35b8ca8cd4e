package mesh

import (
	"log/slog"
	"testing"

	"github.com/tallship-go/tallship/internal/wire"
)

// FuzzTakeEnvelope: whatever an envelope holds, the reader of messages
// across sites delivers at most what it carries, in order, never holds
// more of frames in parts than its bound, and does not crash.
func FuzzTakeEnvelope(f *testing.F) {
	const run, peerRun = 5, 7
	key := wire.NodeKey("me", run)
	msg := wire.Frame(wire.Message, []byte("hello"))
	envelope := func(e wire.Envelope, frames ...[]byte) []byte {
		e.Site, e.Node, e.Run = []byte("a"), []byte("a-0"), peerRun
		b := wire.AppendEnvelopeHeader(nil, &e)
		for _, f := range frames {
			b = append(b, f...)
		}
		return b
	}
	f.Add(envelope(wire.Envelope{To: []wire.Addressee{{Key: key, Epoch: 1, Seq: 0}}, Parts: 1}, msg, msg))
	f.Add(envelope(wire.Envelope{To: []wire.Addressee{{Key: 1}, {Key: key, Epoch: 2, Base: 1, Seq: 3}}, Parts: 1}, msg))
	f.Add(envelope(wire.Envelope{To: []wire.Addressee{{Key: key, Epoch: 1, Seq: 0}}, Part: 0, Parts: 2}, msg[:4]))
	f.Add(envelope(wire.Envelope{Ack: true, AckEpoch: 1, AckNext: 3}))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := testConfig("me")
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.ReceiveBuffer = 1 << 16
		cfg.MaxMessageSize = 1 << 10
		n, err := New("c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		s := newRemoteSet(n, nil)
		s.run, s.key = run, key
		defer s.close()
		s.up("a-0", "a", peerRun, false)
		r := s.byID["a-0"]
		s.take(b)
		got := len(n.recv)
		if got > len(b)/2 {
			t.Fatalf("%d messages from %d bytes", got, len(b))
		}
		s.take(b) // the same again: nothing new
		if len(n.recv) != got {
			t.Fatalf("%d messages, then %d from the same envelope again", got, len(n.recv)-got)
		}
		if s.partBytes < 0 || s.partBytes > maxPartBytes || len(r.part.buf) > wire.HeaderMax+cfg.MaxMessageSize {
			t.Fatalf("parts: %d bytes held, %d gathered", s.partBytes, len(r.part.buf))
		}
	})
}
