package tlsid_test

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/transport/tlsid"
)

func ExampleURI() {
	fmt.Println(tlsid.URI("node-1"))
	fmt.Println(tlsid.URI("rack 4/node 1"))
	// Output:
	// tallship:node/node-1
	// tallship:node/rack%204%2Fnode%201
}

// Any id (a byte string up to 1 KiB) survives a certificate: issued,
// encoded, parsed, and read back.
func TestIssuedCertificateNamesID(t *testing.T) {
	ca, err := tlsid.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "rack 4/node 1", "100%", "é\u00a0ü", "tallship:node/x", strings.Repeat("z", 1024), "\x00\xff"} {
		cert, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if got := tlsid.IDs(leaf); !slices.Equal(got, []string{id}) {
			t.Errorf("%q: IDs = %q", id, got)
		}
		if err := tlsid.Check(leaf, id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
		if err := tlsid.Check(leaf, id+"x"); err == nil {
			t.Errorf("%q: Check of another id passed", id)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%q: does not verify against the CA: %v", id, err)
		}
	}
}

func TestConfigIsMutual(t *testing.T) {
	ca, err := tlsid.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.Config("n", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) != 1 || cfg.RootCAs == nil || cfg.ClientCAs == nil || cfg.ClientAuth.String() != "RequireAndVerifyClientCert" {
		t.Fatalf("config %+v", cfg)
	}
}
