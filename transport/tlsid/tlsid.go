// Package tlsid binds tallship node ids to TLS certificates.
//
// With TLS (transport.Config.TLS, mesh.Config.TLS) a node proves its id
// with its certificate: the certificate must name the id in a URI
// subject alternative name, tallship:node/<id> (the id path-escaped, see
// URI), and a peer whose hello claims an id its certificate does not name
// is refused with transport.ErrAuth. Put URI(id) into the certificate
// request of each node for the cluster's CA, or, for tests and small
// clusters, let a CA of this package issue the certificates:
//
//	ca, _ := tlsid.NewCA("my cluster", 365*24*time.Hour)
//	cfg, _ := ca.Config("node-1", 30*24*time.Hour) // for mesh.Config.TLS
//
// A URI SAN rather than the subject's common name: a certificate has one
// common name, which often already holds a host name (and Go no longer
// verifies host names against it), while SANs are typed and several can
// coexist, so a node's certificate may name its id and its host names
// for other uses. SPIFFE names workloads the same way.
package tlsid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Scheme and prefix of the URI that names a node id.
const (
	scheme = "tallship"
	prefix = "node/"
)

// URI returns the URI naming node id in a certificate:
// tallship:node/<id>, the id path-escaped so that any id (a byte string)
// gives a valid URI.
func URI(id string) *url.URL {
	return &url.URL{Scheme: scheme, Opaque: prefix + url.PathEscape(id)}
}

// IDs returns the node ids cert names, in the order of its URI SANs.
func IDs(cert *x509.Certificate) []string {
	var ids []string
	for _, u := range cert.URIs {
		if u.Scheme != scheme || !strings.HasPrefix(u.Opaque, prefix) {
			continue
		}
		if id, err := url.PathUnescape(strings.TrimPrefix(u.Opaque, prefix)); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// Check returns nil when cert names node id, else an error that says
// which ids it names, if any.
func Check(cert *x509.Certificate, id string) error {
	ids := IDs(cert)
	for _, x := range ids {
		if x == id {
			return nil
		}
	}
	if len(ids) == 0 {
		return fmt.Errorf("the certificate (subject %q) names no node id (want a URI SAN %s)", cert.Subject.CommonName, URI(id))
	}
	return fmt.Errorf("the certificate (subject %q) names node ids %q, not %q", cert.Subject.CommonName, ids, id)
}

// CA is a certificate authority that issues node certificates: an
// ECDSA P-256 key and its self-signed certificate. It is meant for tests
// and small clusters; a cluster with a CA of its own puts URI(id) into
// its node certificates instead.
type CA struct {
	// Cert is the CA's certificate, which every node trusts.
	Cert *x509.Certificate
	// Key signs the certificates the CA issues.
	Key crypto.Signer
}

// NewCA makes a CA named name, valid from an hour ago for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue returns a certificate and key for node id, signed by the CA,
// valid from an hour ago for validity, for both ends of a link (client and
// server authentication). It names the id (URI(id)) and has the id as its
// common name too, for people reading it, when the id is valid UTF-8 of
// at most 64 bytes (RFC 5280's bound).
func (ca *CA) Issue(id string, validity time.Duration) (tls.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return tls.Certificate{}, errors.New("tlsid: no CA")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := serialNumber()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: commonName(id)},
		URIs:      []*url.URL{URI(id)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsid: issue a certificate for %q: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Pool returns a pool that holds the CA's certificate alone.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Config returns a TLS configuration for node id, ready for
// mesh.Config.TLS: a certificate the CA issues for id (see Issue), trust
// in the CA alone for both ends of a link, mutual authentication, TLS 1.3.
func (ca *CA) Config(id string, validity time.Duration) (*tls.Config, error) {
	cert, err := ca.Issue(id, validity)
	if err != nil {
		return nil, err
	}
	pool := ca.Pool()
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

func commonName(id string) string {
	if utf8.ValidString(id) && len(id) <= 64 {
		return id
	}
	return "tallship node"
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
