// Package pki makes throwaway certificate authorities and mutual-TLS
// configurations for tests, on transport/tlsid: every certificate names
// its node id.
package pki

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/tallship-go/tallship/transport/tlsid"
)

// CA is a certificate authority for one test.
type CA struct{ ca *tlsid.CA }

// New makes a CA valid for an hour.
func New(t testing.TB) *CA {
	t.Helper()
	ca, err := tlsid.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{ca}
}

// Config returns a mutual-TLS configuration with a certificate for node
// id, signed by the CA, trusting only the CA.
func (ca *CA) Config(t testing.TB, id string) *tls.Config {
	t.Helper()
	cfg, err := ca.ca.Config(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TLSID returns the CA as a tlsid.CA, to issue certificates of other
// shapes.
func (ca *CA) TLSID() *tlsid.CA { return ca.ca }
