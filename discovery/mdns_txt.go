package discovery

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strconv"
)

// The TXT record of a node: a list of strings, each at most 255 bytes,
// each "key=value" with a value of any bytes:
//
//	v=1          protocol version (exactly once)
//	c=<bytes>    the cluster name, in chunks of 253 bytes, in order
//	ch=<hex>     instead of c: SHA-256 of a cluster name longer than maxClusterInTXT
//	i=<bytes>    the node id, in chunks of 253 bytes, in order
//
// Every chunk but a key's last is full, so each record has one encoding.
// Keys this version does not know are skipped, for later versions.
const (
	txtVersion = "1"
	// maxTXTString is the DNS limit on one TXT string.
	maxTXTString = 255
	// maxTXTStrings bounds how many strings a decoder accepts.
	maxTXTStrings = 16
	// maxClusterInTXT is the longest cluster name carried in full; a longer
	// one is carried as its SHA-256, so that a packet stays under
	// maxPacketSize whatever the name.
	maxClusterInTXT = 320
	// MaxIDLen is the longest node id MDNS can announce: ids are carried in
	// full in TXT, and a packet must stay under 1,400 bytes.
	MaxIDLen = 320
)

// txtInfo is what a TXT record says.
type txtInfo struct {
	id string
	// cluster is the full cluster name, or empty when only its hash was sent.
	cluster     string
	clusterHash []byte // 32 bytes when cluster is empty
}

// matches reports whether the record belongs to cluster.
func (t txtInfo) matches(cluster string) bool {
	if t.clusterHash == nil {
		return t.cluster == cluster
	}
	sum := sha256.Sum256([]byte(cluster))
	return subtle.ConstantTimeCompare(sum[:], t.clusterHash) == 1
}

// encodeTXT returns the TXT strings of a node as raw bytes.
func encodeTXT(cluster, id string) [][]byte {
	out := [][]byte{[]byte("v=" + txtVersion)}
	if len(cluster) <= maxClusterInTXT {
		out = appendChunks(out, "c=", cluster)
	} else {
		sum := sha256.Sum256([]byte(cluster))
		out = append(out, []byte("ch="+hex.EncodeToString(sum[:])))
	}
	return appendChunks(out, "i=", id)
}

func appendChunks(out [][]byte, key, value string) [][]byte {
	room := maxTXTString - len(key)
	for {
		n := min(len(value), room)
		out = append(out, []byte(key+value[:n]))
		value = value[n:]
		if value == "" {
			return out
		}
	}
}

// decodeTXT parses the TXT strings of a node. It is bounded by its input
// and returns an error wrapping ErrBadTXT for anything but a well-formed
// record of this protocol version.
func decodeTXT(strs [][]byte) (txtInfo, error) {
	var (
		t                    txtInfo
		cluster, id          []byte
		version, hashed      bool
		clusterOpen, idOpen  = true, true
		clusterSeen, idsSeen bool
	)
	if len(strs) > maxTXTStrings {
		return t, fmt.Errorf("%w: %d strings", ErrBadTXT, len(strs))
	}
	for _, s := range strs {
		if len(s) > maxTXTString {
			return t, fmt.Errorf("%w: string of %d bytes", ErrBadTXT, len(s))
		}
		key, value, ok := bytes.Cut(s, []byte("="))
		if !ok || len(key) == 0 {
			return t, fmt.Errorf("%w: %q is not key=value", ErrBadTXT, truncate(s))
		}
		switch string(key) {
		case "v":
			if version {
				return t, fmt.Errorf("%w: version twice", ErrBadTXT)
			}
			if string(value) != txtVersion {
				return t, fmt.Errorf("%w: unsupported version %q", ErrBadTXT, truncate(value))
			}
			version = true
		case "c":
			if !clusterOpen || hashed {
				return t, fmt.Errorf("%w: cluster chunk after a short one", ErrBadTXT)
			}
			cluster = append(cluster, value...)
			clusterSeen = true
			clusterOpen = len(s) == maxTXTString
			if len(cluster) > maxClusterInTXT {
				return t, fmt.Errorf("%w: cluster name over %d bytes", ErrBadTXT, maxClusterInTXT)
			}
		case "ch":
			if hashed || clusterSeen {
				return t, fmt.Errorf("%w: cluster given twice", ErrBadTXT)
			}
			sum, err := hex.DecodeString(string(value))
			if err != nil || len(sum) != sha256.Size {
				return t, fmt.Errorf("%w: cluster hash %q", ErrBadTXT, truncate(value))
			}
			t.clusterHash, hashed = sum, true
		case "i":
			if !idOpen {
				return t, fmt.Errorf("%w: id chunk after a short one", ErrBadTXT)
			}
			id = append(id, value...)
			idsSeen = true
			idOpen = len(s) == maxTXTString
			if len(id) > MaxIDLen {
				return t, fmt.Errorf("%w: id over %d bytes", ErrBadTXT, MaxIDLen)
			}
		}
	}
	switch {
	case !version:
		return t, fmt.Errorf("%w: no version", ErrBadTXT)
	case !clusterSeen && !hashed:
		return t, fmt.Errorf("%w: no cluster", ErrBadTXT)
	case !hashed && len(cluster) == 0:
		return t, fmt.Errorf("%w: empty cluster", ErrBadTXT)
	case !idsSeen || len(id) == 0:
		return t, fmt.Errorf("%w: no id", ErrBadTXT)
	}
	t.cluster, t.id = string(cluster), string(id)
	return t, nil
}

func truncate(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// splitRDATA splits raw TXT RDATA (length-prefixed strings) into its
// strings, as a DNS decoder would.
func splitRDATA(rdata []byte) ([][]byte, error) {
	var out [][]byte
	for len(rdata) > 0 {
		n := int(rdata[0])
		if 1+n > len(rdata) {
			return nil, fmt.Errorf("%w: string overruns record", ErrBadTXT)
		}
		out = append(out, rdata[1:1+n])
		rdata = rdata[1+n:]
		if len(out) > maxTXTStrings {
			return nil, fmt.Errorf("%w: over %d strings", ErrBadTXT, maxTXTStrings)
		}
	}
	return out, nil
}

// escapeTXT turns raw bytes into the presentation form that miekg/dns
// keeps in dns.TXT.Txt and parses back when packing.
func escapeTXT(b []byte) string {
	var out []byte
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c < ' ' || c > '~':
			out = append(out, '\\')
			out = append(out, fmt.Sprintf("%03d", c)...)
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// unescapeTXT reverses escapeTXT (and miekg/dns's unpacking): \DDD is a
// byte, \X is X. It refuses more than maxTXTString bytes.
func unescapeTXT(s string) ([]byte, error) {
	out := make([]byte, 0, min(len(s), maxTXTString))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' {
			if i+1 >= len(s) {
				return nil, fmt.Errorf("%w: dangling escape", ErrBadTXT)
			}
			if i+3 < len(s) && isDigits(s[i+1:i+4]) {
				v, _ := strconv.Atoi(s[i+1 : i+4])
				if v > 255 {
					return nil, fmt.Errorf("%w: escape \\%s", ErrBadTXT, s[i+1:i+4])
				}
				c = byte(v)
				i += 3
			} else {
				c = s[i+1]
				i++
			}
		}
		if len(out) == maxTXTString {
			return nil, fmt.Errorf("%w: string over %d bytes", ErrBadTXT, maxTXTString)
		}
		out = append(out, c)
	}
	return out, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
