package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/pki"
	"github.com/tallship-go/tallship/transport/tlsid"
)

// noIDConfig is a mutual-TLS configuration whose certificate, signed by
// ca, names no node id (a host name only).
func noIDConfig(t *testing.T, ca *tlsid.CA) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "a"}, DNSNames: []string{"a.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.Pool(), ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
	}
}

// With TLS a node's hello must claim the id its certificate names: the
// dialer here says "a", the acceptor "b". A certificate for another id,
// or naming none, is refused on both ends with ErrAuth, and the end that
// checked says what the certificate names.
func TestTLSBindsNodeID(t *testing.T) {
	ca := pki.New(t)
	cfg := func(c *tls.Config) Config { x := fastConfig; x.TLS = c; return x }
	noClientCert := ca.Config(t, "a")
	noClientCert.Certificates = nil
	tests := []struct {
		name     string
		dialer   *tls.Config
		acceptor *tls.Config
		checker  string // "dialer" or "acceptor": the end that finds the lie
		says     string // in the checker's error
	}{
		{"right ids", ca.Config(t, "a"), ca.Config(t, "b"), "", ""},
		{"dialer claims another id", ca.Config(t, "x"), ca.Config(t, "b"), "acceptor", `names node ids ["x"], not "a"`},
		{"acceptor claims another id", ca.Config(t, "a"), ca.Config(t, "y"), "dialer", `names node ids ["y"], not "b"`},
		{"dialer's certificate names no id", noIDConfig(t, ca.TLSID()), ca.Config(t, "b"), "acceptor", "names no node id"},
		{"acceptor's certificate names no id", ca.Config(t, "a"), noIDConfig(t, ca.TLSID()), "dialer", "names no node id"},
		{"dialer has no certificate", noClientCert, ca.Config(t, "b"), "acceptor", "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, a := pairCfg(t, cfg(tt.dialer), cfg(tt.acceptor))
			if tt.checker == "" {
				if d.err != nil || a.err != nil {
					t.Fatalf("dialer %v, acceptor %v", d.err, a.err)
				}
				return
			}
			ends := map[string]error{"dialer": d.err, "acceptor": a.err}
			for end, err := range ends {
				if !errors.Is(err, ErrAuth) {
					t.Errorf("%s: err = %v, want ErrAuth", end, err)
				}
			}
			if err := ends[tt.checker]; err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("%s: err = %v, want it to say %q", tt.checker, err, tt.says)
			}
		})
	}
}

// A node of an earlier release (TLS without the id flag) is refused
// before TLS starts, on both ends.
func TestTLSWithoutIDFlagRefused(t *testing.T) {
	ca := pki.New(t)
	c := fastConfig
	c.TLS = ca.Config(t, "a")
	old := Hello{Cluster: "c", ID: "a", Flags: flagTLS}
	local := Hello{Cluster: "c", ID: "b", Flags: c.flags()}
	if err := check(&local, &old, nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("check = %v, want ErrAuth", err)
	}
}
