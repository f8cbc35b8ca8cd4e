package sites

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// The subjects a cluster uses on NATS (see docs/sites.md):
//
//	tallship.<cluster>.reg.<site>      the registry, published by the nodes of <site>
//	tallship.<cluster>.n.<node>.reg    the registry, to one node (answers, asks)
//	tallship.<cluster>.n.<node>.msg    the mesh's messages to one node
//	tallship.<cluster>.msg.<site>      the mesh's messages to nodes of <site>
//
// Each <name> is the name itself when it is a plain token (ASCII letters,
// digits, '-' and '_', at most 64 bytes), else "h-" and a hash of it.
// With a secret every token is "s-" and a keyed hash of the name instead:
// a NATS user without the secret can tell neither the cluster, nor its
// sites, nor its nodes, and a node with another secret subscribes to
// subjects nobody of this cluster publishes on.

// names makes the subjects of one cluster and seals what goes on them.
type names struct {
	root  string      // "tallship.<cluster>"
	key   []byte      // keys the tokens' hashes; nil without a secret
	aead  cipher.AEAD // seals payloads; nil without a secret
	nonce int         // the AEAD's nonce size
}

// newNames returns the names of cluster, keyed by secret when it is set.
func newNames(cluster, secret string) (*names, error) {
	n := &names{}
	if secret != "" {
		// Two keys from the secret, each bound to the cluster's name:
		// one for the subjects' hashes, one for the payloads.
		prk, err := hkdf.Extract(sha256.New, []byte(secret), []byte("tallship nats v1"))
		if err != nil {
			return nil, err
		}
		if n.key, err = hkdf.Expand(sha256.New, prk, "subjects\x00"+cluster, 32); err != nil {
			return nil, err
		}
		seal, err := hkdf.Expand(sha256.New, prk, "payloads\x00"+cluster, chacha20poly1305.KeySize)
		if err != nil {
			return nil, err
		}
		if n.aead, err = chacha20poly1305.NewX(seal); err != nil {
			return nil, err
		}
		n.nonce = n.aead.NonceSize()
	}
	n.root = "tallship." + n.token("cluster", cluster)
	return n, nil
}

// token returns name as a subject token (see above); kind keeps the
// hashes of a cluster, a site and a node of the same name apart.
func (n *names) token(kind, name string) string {
	if n.key != nil {
		mac := hmac.New(sha256.New, n.key)
		mac.Write([]byte(kind + "\x00" + name))
		return "s-" + hex.EncodeToString(mac.Sum(nil)[:16])
	}
	if plain(name) {
		return name
	}
	sum := sha256.Sum256([]byte(kind + "\x00" + name))
	return "h-" + hex.EncodeToString(sum[:16])
}

// plain reports whether s can be a subject token as it is.
func plain(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// siteRegistry is the subject site's nodes publish the registry on.
func (n *names) siteRegistry(site string) string { return n.root + ".reg." + n.token("site", site) }

// allRegistry is the subject that hears every site's registry.
func (n *names) allRegistry() string { return n.root + ".reg.*" }

// nodeRegistry is the subject of the registry's messages to node.
func (n *names) nodeRegistry(node string) string {
	return n.root + ".n." + n.token("node", node) + ".reg"
}

// nodeMessages is the subject of the mesh's messages to node.
func (n *names) nodeMessages(node string) string {
	return n.root + ".n." + n.token("node", node) + ".msg"
}

// siteMessages is the subject of the mesh's messages to nodes of site.
func (n *names) siteMessages(site string) string { return n.root + ".msg." + n.token("site", site) }

// overhead is what sealing adds to a payload.
func (n *names) overhead() int {
	if n.aead == nil {
		return 0
	}
	return n.nonce + n.aead.Overhead()
}

// seal returns msg as it goes on subject: with a secret, a random nonce
// then msg encrypted and authenticated, bound to the subject (a sealed
// message moved to another subject does not open).
func (n *names) seal(subject string, msg []byte) ([]byte, error) {
	if n.aead == nil {
		return msg, nil
	}
	out := make([]byte, n.nonce, n.nonce+len(msg)+n.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return n.aead.Seal(out, out[:n.nonce], msg, []byte(subject)), nil
}

// errSealed is open's error for a payload that does not open: of another
// secret, or changed on the way.
var errSealed = errors.New("not sealed with this cluster's secret")

// open returns the message a payload from subject carries.
func (n *names) open(subject string, data []byte) ([]byte, error) {
	if n.aead == nil {
		return data, nil
	}
	if len(data) < n.nonce+n.aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes", errSealed, len(data))
	}
	msg, err := n.aead.Open(nil, data[:n.nonce], data[n.nonce:], []byte(subject))
	if err != nil {
		return nil, errSealed
	}
	return msg, nil
}
