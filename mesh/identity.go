package mesh

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/transport/tlsid"
)

// certIdentity is the registry's Identity with TLS: the node signs its
// registry messages with its certificate's key, its credential is its
// certificate chain, and another owner's credential is valid when its
// chain verifies against the roots the link handshake trusts and its leaf
// names the owner (tlsid.Check): what a link's handshake proves of the
// peer at the other end, the signatures prove of every owner, however
// many nodes relayed what it said. See docs/registry-protocol.md,
// "Owners' signatures".
type certIdentity struct {
	chain []byte // the chain, each DER certificate behind its uvarint length
	key   crypto.Signer
	cfg   *tls.Config // roots and clock, as the handshake uses them
}

// newCertIdentity returns the identity of the node whose TLS
// configuration is cfg: it signs with the key of Certificates[0].
func newCertIdentity(cfg *tls.Config) (*certIdentity, error) {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return nil, errors.New("mesh: Config.TLS has no Certificates[0]: the registry signs with its key")
	}
	cert := cfg.Certificates[0]
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("mesh: Config.TLS: the key of Certificates[0] (%T) cannot sign", cert.PrivateKey)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = binary.AppendUvarint(chain, uint64(len(der)))
		chain = append(chain, der...)
	}
	return &certIdentity{chain: chain, key: key, cfg: cfg}, nil
}

func (c *certIdentity) Credential() []byte { return c.chain }

// Sign signs msg: its SHA-256 with an ECDSA or RSA (PKCS #1 v1.5) key,
// msg itself with an Ed25519 key.
func (c *certIdentity) Sign(msg []byte) ([]byte, error) {
	if _, ok := c.key.Public().(ed25519.PublicKey); ok {
		return c.key.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	sum := sha256.Sum256(msg)
	return c.key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// Verifier checks that cred is a certificate chain that verifies against
// the roots the link handshake trusts (ClientCAs, for a peer's
// certificate as a client; else RootCAs, nil meaning the system's, as a
// server) and whose leaf names owner, and returns the check of
// signatures by the leaf's key.
func (c *certIdentity) Verifier(owner string, cred []byte) (func(msg, sig []byte) bool, error) {
	var certs []*x509.Certificate
	for len(cred) > 0 {
		n, k := binary.Uvarint(cred)
		if k <= 0 || n > uint64(len(cred)-k) {
			return nil, errors.New("malformed certificate chain")
		}
		cert, err := x509.ParseCertificate(cred[k : k+int(n)])
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
		cred = cred[k+int(n):]
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	opts := x509.VerifyOptions{Intermediates: x509.NewCertPool()}
	if c.cfg.Time != nil {
		opts.CurrentTime = c.cfg.Time()
	}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	verify := func(roots *x509.CertPool, usage x509.ExtKeyUsage) error {
		opts.Roots, opts.KeyUsages = roots, []x509.ExtKeyUsage{usage}
		_, err := certs[0].Verify(opts)
		return err
	}
	var err error
	if c.cfg.ClientCAs != nil {
		err = verify(c.cfg.ClientCAs, x509.ExtKeyUsageClientAuth)
	}
	if c.cfg.ClientCAs == nil || err != nil {
		if err2 := verify(c.cfg.RootCAs, x509.ExtKeyUsageServerAuth); err2 == nil || c.cfg.ClientCAs == nil {
			err = err2
		}
	}
	if err != nil {
		// Expired, or of an authority not trusted here: a relay may
		// have checked it in good faith (see registry.ErrUntrusted).
		return nil, fmt.Errorf("%w: %v", registry.ErrUntrusted, err)
	}
	if err := tlsid.Check(certs[0], owner); err != nil {
		return nil, err
	}
	switch pub := certs[0].PublicKey.(type) {
	case *ecdsa.PublicKey:
		return func(msg, sig []byte) bool {
			sum := sha256.Sum256(msg)
			return ecdsa.VerifyASN1(pub, sum[:], sig)
		}, nil
	case ed25519.PublicKey:
		return func(msg, sig []byte) bool { return ed25519.Verify(pub, msg, sig) }, nil
	case *rsa.PublicKey:
		return func(msg, sig []byte) bool {
			sum := sha256.Sum256(msg)
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil
		}, nil
	}
	return nil, fmt.Errorf("a key of type %T", certs[0].PublicKey)
}
