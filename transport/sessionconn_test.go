package transport

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// recordingConn records each Write it is given.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestSessionConnJoinsDataFrames(t *testing.T) {
	for _, size := range []int{1, 64, tcpCopyMax + 1, sealedCopyMax} {
		rc := &recordingConn{}
		c := newSessionConn(rc, &streamSet{}, nil)
		body := bytes.Repeat([]byte{7}, size)
		hdr := yamuxHeader(yamuxTypeData, uint32(size))
		if n, err := c.Write(hdr); n != len(hdr) || err != nil {
			t.Fatalf("header write: %d, %v", n, err)
		}
		if len(rc.writes) != 0 {
			t.Fatalf("size %d: header written alone", size)
		}
		if n, err := c.Write(body); n != size || err != nil {
			t.Fatalf("body write: %d, %v", n, err)
		}
		want := append(hdr, body...)
		if len(rc.writes) != 1 || !bytes.Equal(rc.writes[0], want) {
			t.Fatalf("size %d: %d writes, want header and body in one", size, len(rc.writes))
		}
	}
}

func TestSessionConnPassesControlFrames(t *testing.T) {
	const typeWindowUpdate, typePing = 1, 2
	for _, hdr := range [][]byte{
		yamuxHeader(typeWindowUpdate, 1<<18), // a window update: no body follows
		yamuxHeader(typePing, 7),
		yamuxHeader(yamuxTypeData, 0), // a data frame without a body
	} {
		rc := &recordingConn{}
		c := newSessionConn(rc, &streamSet{}, nil)
		c.Write(hdr)
		if len(rc.writes) != 1 || !bytes.Equal(rc.writes[0], hdr) {
			t.Fatalf("header %x held back", hdr)
		}
	}
}
