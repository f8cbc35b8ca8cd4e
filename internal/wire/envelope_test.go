package wire

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func envelopeBytes(e *Envelope, frames ...[]byte) []byte {
	b := AppendEnvelopeHeader(nil, e)
	for _, f := range frames {
		b = append(b, f...)
	}
	return b
}

func TestEnvelopeRoundTrip(t *testing.T) {
	m1, m2 := Frame(Message, []byte("one")), Frame(Message, bytes.Repeat([]byte("x"), 300))
	for _, e := range []Envelope{
		{Site: []byte("lab"), Node: []byte("a-1"), Run: 1 << 60, Ack: true, AckEpoch: 7, AckNext: 1 << 40},
		{Site: []byte("lab"), Node: []byte("a-1"), To: []Addressee{{Key: NodeKey("b", 9), Epoch: 3, Base: 1, Seq: 5}}, Parts: 1},
		{Site: []byte("lab"), Node: []byte("a-1"), Run: 2, Ack: true, AckEpoch: 7, AckNext: 9, AckFollows: 1<<64 - 1},
		{Site: []byte("lab"), Node: []byte("a-1"), Ack: true, AckEpoch: 1, AckNext: 2,
			To: []Addressee{{Key: 1, Epoch: 2, Base: 0, Seq: 0}, {Key: 3, Epoch: 4, Base: 9, Seq: 1 << 50}}, Part: 2, Parts: 3},
	} {
		b := envelopeBytes(&e, m1, m2)
		if len(e.To) == 0 {
			b = envelopeBytes(&e)
		}
		if len(b) > EnvelopeHeaderMax(string(e.Site), string(e.Node), len(e.To))+len(m1)+len(m2) {
			t.Fatalf("header over EnvelopeHeaderMax")
		}
		var got Envelope
		if err := ParseEnvelope(b, &got); err != nil {
			t.Fatalf("%+v: %v", e, err)
		}
		want := e
		if len(e.To) > 0 {
			want.Frames = slices.Concat(m1, m2)
		}
		if !bytes.Equal(got.Site, want.Site) || !bytes.Equal(got.Node, want.Node) || got.Run != want.Run || got.Ack != want.Ack ||
			got.AckEpoch != want.AckEpoch || got.AckNext != want.AckNext || got.AckFollows != want.AckFollows || !slices.Equal(got.To, want.To) ||
			got.Part != want.Part || got.Parts != want.Parts || !bytes.Equal(got.Frames, want.Frames) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		if len(e.To) > 0 && e.Parts == 1 {
			msgs, err := ParseMessages(nil, got.Frames, 1024)
			if err != nil || len(msgs) != 2 || string(msgs[0]) != "one" || len(msgs[1]) != 300 {
				t.Fatalf("messages %q, %v", msgs, err)
			}
		}
	}
}

func TestEnvelopeRefused(t *testing.T) {
	to := []Addressee{{Key: 1, Epoch: 2, Base: 3, Seq: 4}}
	msg := Frame(Message, []byte("m"))
	cases := map[string][]byte{
		"empty":          nil,
		"other version":  {2, 1, 'a', 1, 'b', 0, 0},
		"no site":        envelopeBytes(&Envelope{Site: nil, Node: []byte("n"), Ack: true}),
		"long site":      envelopeBytes(&Envelope{Site: bytes.Repeat([]byte("s"), MaxEnvelopeSite+1), Node: []byte("n"), Ack: true}),
		"control char":   envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n\n"), Ack: true}),
		"nothing in it":  envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n")}),
		"no frames":      envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n"), To: to, Parts: 1}),
		"no parts":       envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n"), To: to}, msg),
		"part past":      envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n"), To: to, Part: 2, Parts: 2}, msg),
		"base after seq": envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n"), To: []Addressee{{Base: 5, Seq: 4}}, Parts: 1}, msg),
		"trailing":       append(envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n"), Ack: true}), 0),
		"cut":            envelopeBytes(&Envelope{Site: []byte("s"), Node: []byte("n"), To: to, Parts: 1})[:20],
		"flags":          {1, 1, 's', 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 6},
		"follows alone":  {1, 1, 's', 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0},
		"follows 0":      {1, 1, 's', 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"many":           {1, 1, 's', 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x03},
	}
	for name, b := range cases {
		var e Envelope
		err := ParseEnvelope(b, &e)
		if !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"none":      nil,
		"other":     Frame(Ack, []byte("12345678x")),
		"too large": Frame(Message, make([]byte, 11)),
		"cut":       Frame(Message, []byte("abc"))[:3],
	} {
		if _, err := ParseMessages(nil, b, 10); !errors.Is(err, ErrBadFrame) {
			t.Errorf("messages %s: %v", name, err)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	m := Frame(Message, []byte("hello"))
	f.Add(envelopeBytes(&Envelope{Site: []byte("lab"), Node: []byte("a"), Ack: true, AckEpoch: 1, AckNext: 2}))
	f.Add(envelopeBytes(&Envelope{Site: []byte("lab"), Node: []byte("a"), To: []Addressee{{Key: 1, Epoch: 2, Seq: 3}}, Parts: 1}, m, m))
	f.Add(envelopeBytes(&Envelope{Site: []byte("lab"), Node: []byte("a"), To: []Addressee{{Key: 1}, {Key: 2}}, Part: 1, Parts: 4}, m[:3]))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Envelope
		if err := ParseEnvelope(b, &e); err != nil {
			return
		}
		// What parses encodes back to what parses the same.
		again := AppendEnvelopeHeader(nil, &e)
		again = append(again, e.Frames...)
		var e2 Envelope
		if err := ParseEnvelope(again, &e2); err != nil {
			t.Fatalf("re-encoded envelope: %v", err)
		}
		if !bytes.Equal(e2.Node, e.Node) || e2.Run != e.Run || !slices.Equal(e2.To, e.To) || !bytes.Equal(e2.Frames, e.Frames) || e2.Parts != e.Parts {
			t.Fatalf("re-encoded %+v as %+v", e, e2)
		}
		if len(e.To) > 0 {
			msgs, err := ParseMessages(nil, e.Frames, 1<<10)
			if err != nil {
				return
			}
			total := 0
			for _, p := range msgs {
				if len(p) > 1<<10 || cap(p) != len(p) {
					t.Fatalf("payload of %d bytes, cap %d", len(p), cap(p))
				}
				total += len(p)
			}
			if total > len(e.Frames) {
				t.Fatalf("%d bytes of payloads from %d bytes of frames", total, len(e.Frames))
			}
		}
	})
}
