package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// seedFrames are one valid frame of each message, from the encoders.
func seedFrames() [][]byte {
	const max = 1 << 20
	e := fakeRecord("n1", 5, 3, "web", map[string]string{"zone": "a", "": "empty key"})
	frames := [][]byte{
		must(encodeHello("n1", []digestEntry{{"n1", 5, 3, 9, false}, {"n2", 1, 0, 1, true}}, max)),
		must(encodeState("n1", 5, 3, 9, false, []peerRef{{"n2", 1}, {"n3", 2}}, max)),
		must(encodeState("n1", 5, 3, 10, true, nil, max)),
		must(encodeStateOf(&message{typ: msgState, owner: "n1", inc: 5, seq: 3, beat: 12, base: 10, delta: true, peers: []peerRef{{"n2", 0}, {"n4", 3}}}, max)),
		must(encodePut("n1", 5, e, max)),
		must(encodeDel("n1", 5, 4, e.rec.ID, max)),
		encodeSynced(),
		must(encodeWant("n1", max)),
		must(encodeCred("n1", 5, []byte("credential"), []byte("signature"), max)),
		must(encodePutSigned("n1", 5, e, []byte("signature"), max)),
		must(encodeStateOf(&message{typ: msgState, owner: "n1", inc: 5, seq: 3, beat: 9, base: 9, lifetime: 5000 * 1e6, peers: []peerRef{{"n2", 1}}, sig: []byte("signature")}, max)),
	}
	frames = append(frames, must(encodeSnap("n1", 5, 3, []*entry{e, fakeRecord("n1", 5, 2, "db", nil)}, max))...)
	return append(frames, must(encodeSnap("n1", 0, 0, nil, max))...)
}

// seedMessages are seedFrames as FuzzDecode takes them: the type byte,
// then the payload (no length).
func seedMessages() [][]byte {
	var out [][]byte
	for _, f := range seedFrames() {
		out = append(out, typeAndPayload(f))
	}
	return out
}

// typeAndPayload returns a frame's type byte then its payload.
func typeAndPayload(f []byte) []byte {
	t, p := splitFrame(f)
	return append([]byte{byte(t)}, p...)
}

// reencode encodes a decoded message again.
func reencode(m *message) ([]byte, error) {
	const max = 1 << 20
	var f []byte
	var err error
	switch m.typ {
	case msgHello:
		if m.proto != protoVersion {
			return nil, errSkip // encodeHello writes only the current version
		}
		f, err = encodeHello(m.node, m.digest, max)
	case msgState:
		f, err = encodeStateOf(m, max)
	case msgPut:
		f, err = encodePutSigned(m.owner, m.inc, m.recs[0], m.sig, max)
	case msgDel:
		f, err = encodeDelSigned(m.owner, m.inc, m.seq, m.id, m.sig, max)
	case msgSnap:
		var fs [][]byte
		fs, err = encodeSnapSigned(m.owner, m.inc, m.seq, m.recs, m.sig, max)
		if err == nil {
			if len(fs) != 1 {
				return nil, errSkip
			}
			f = fs[0]
		}
	case msgSynced:
		f = encodeSynced()
	case msgWant:
		f, err = encodeWant(m.owner, max)
	case msgCred:
		f, err = encodeCred(m.owner, m.inc, m.cred, m.sig, max)
	}
	if err != nil {
		return nil, err
	}
	return typeAndPayload(f), nil
}

var errSkip = errors.New("skip")

// FuzzDecode decodes a message: its type byte, then its payload.
func FuzzDecode(f *testing.F) {
	for _, p := range seedMessages() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) == 0 {
			return
		}
		d := decoder{maxMeta: 4096}
		var m message
		err := d.decode(msgType(p[0]), p[1:], &m)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrMetadataTooLarge) {
				t.Fatalf("decode error %v wraps neither ErrProtocol nor ErrMetadataTooLarge", err)
			}
			return
		}
		if m.typ == msgSnap && !m.last {
			return // encodeSnap sets the flag on its last chunk only
		}
		p2, err := reencode(&m)
		if errors.Is(err, errSkip) {
			return
		}
		if err != nil {
			t.Fatalf("re-encoding a decoded %s: %v", m.typ, err)
		}
		var m2 message
		if err := d.decode(msgType(p2[0]), p2[1:], &m2); err != nil {
			t.Fatalf("decoding a re-encoded %s: %v", m.typ, err)
		}
		if !reflect.DeepEqual(normal(&m), normal(&m2)) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}

// normal makes a message comparable: nil and empty slices alike.
func normal(m *message) message {
	c := *m
	if len(c.digest) == 0 {
		c.digest = nil
	}
	if len(c.peers) == 0 {
		c.peers = nil
	}
	if len(c.recs) == 0 {
		c.recs = nil
	}
	return c
}

// FuzzServe feeds a handshaken link arbitrary frames: Serve must return an
// error or nil, never panic or hang.
func FuzzServe(f *testing.F) {
	f.Add(bytes.Join(seedFrames()[1:], nil))
	f.Add([]byte{byte(msgSynced), 0, byte(msgSynced), 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		n := newNode(t, "me")
		c1, c2 := net.Pipe()
		errc := make(chan error, 1)
		go func() { errc <- n.Serve(context.Background(), "n1", c1) }()
		go drain(c2)
		c2.Write(must(encodeHello("n1", nil, 1<<20)))
		c2.Write(data)
		c2.Close()
		<-errc
		if _, err := n.Services(""); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteFuzzSeeds rewrites testdata/fuzz when REGISTRY_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("REGISTRY_WRITE_SEEDS") != "1" {
		t.Skip("set REGISTRY_WRITE_SEEDS=1 to rewrite the seed corpus")
	}
	write := func(fuzz, name string, data []byte) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range seedMessages() {
		write("FuzzDecode", fmt.Sprintf("seed-%02d-%s", i, msgType(p[0])), p)
	}
	write("FuzzServe", "seed-all-messages", bytes.Join(seedFrames()[1:], nil))
}
