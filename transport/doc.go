// Package transport makes the links of a tallship mesh: a TCP connection,
// a versioned handshake bounded by a timeout, and one yamux session whose
// streams are tagged with a protocol name.
//
// A link starts with a handshake in which each side tells the other its
// protocol version, cluster name, node id, addresses and a fresh nonce:
//
//	dialer                      acceptor
//	hello         ------------>
//	              <------------ hello, verdict
//	verdict       ------------>
//
// Each side checks the other's hello and answers with a verdict, so that a
// refused link (wrong cluster, wrong version, a link to itself, two live
// runs of one id meeting (TwinError), or a refusal by the caller's verify
// hook) fails with the same clear error on both ends. With a cluster
// secret (Config.Secret) a Noise phase follows, proving that both ends
// are members; with TLS (Config.TLS) mutual TLS follows, and the node id
// is bound to the certificate (package tlsid): an end whose certificate
// does not name the id of its hello is refused with ErrAuth, and the
// claimed id is judged (twin, verify hook) only once proven. After the handshake the connection carries a yamux session;
// a peer from which nothing at all arrives for KeepAliveInterval +
// WriteTimeout (1.5 s by default) is declared dead (unless someone vouches
// for it: Config.OnSilent, Link.Vouch), and a quiet link beats so that a
// live peer never stays silent that long. A relaxed link (Link.SetRelaxed)
// beats, and is watched, at Config.RelaxedInterval instead.
//
//	l, err := transport.Dial(ctx, "10.0.0.2:7946", transport.Hello{Cluster: "c", ID: "a"}, transport.Config{}, nil)
//	s, err := l.OpenStream(ctx, "echo")
//
// The peer's streams come from AcceptStream, or from Serve. The session
// is github.com/hashicorp/yamux, used as it is and tuned through its
// Config (config.go); what tallship needs beyond it is done at the
// boundary: around yamux's streams (Stream: blocked calls end when the
// link closes, a frame stuck past WriteTimeout closes the link), under its
// session (each data frame's header and body in one write) and beside it
// (the link's own keepalive, see Config.KeepAliveInterval). An idle link costs three goroutines per side: yamux's
// receive and send loops and the one accepting streams.
//
// When two links join the same pair of nodes, Prefer tells which one both
// ends keep.
package transport
