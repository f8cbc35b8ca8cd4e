package discovery

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// DNS names used by MDNS. A node of cluster C with id I is published as
//
//	_<hash(C)>._sub._tallship._tcp.local.  PTR  <label(C,I)>._tallship._tcp.local.
//	_tallship._tcp.local.                  PTR  <label(C,I)>._tallship._tcp.local.
//	<label(C,I)>._tallship._tcp.local.     SRV  <port> <label(C,I)>.tallship.local.
//	<label(C,I)>._tallship._tcp.local.     TXT  "v=1" "c=C" "i=I"
//	<label(C,I)>.tallship.local.           A / AAAA
//
// and _services._dns-sd._udp.local. PTR _tallship._tcp.local. answers
// service type enumeration. The cluster becomes a DNS-SD subtype: any
// length of name gives a short, DNS-safe label, and the full name in TXT
// tells colliding hashes apart. The base-type PTR names the same instance
// as the subtype one, so it reveals nothing more: with a cluster secret,
// neither tells which cluster a node belongs to (mesh announces a keyed
// hash of the cluster name then).
const (
	serviceType  = "_tallship._tcp.local."
	servicesName = "_services._dns-sd._udp.local." // RFC 6763 §9
	hostDomain   = "tallship.local."
	maxLabelLen  = 63
	hashedPrefix = "h-"
	// clusterTagLen: the characters of the cluster's hash in a plain
	// instance label.
	clusterTagLen = 6
)

// lowerBase32 is base32 without padding in lower case, so that labels
// compare equal whatever case a DNS implementation hands back.
var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// names holds the fully qualified names one node publishes.
type names struct {
	service  string // cluster subtype: browse target
	instance string // service instance: owner of SRV and TXT
	host     string // SRV target: owner of A and AAAA
}

func newNames(cluster, id string) names {
	label := instanceLabel(cluster, id)
	return names{
		service:  serviceName(cluster),
		instance: label + "." + serviceType,
		host:     label + "." + hostDomain,
	}
}

// serviceName returns the subtype browsed for cluster: "_" and 80 bits of
// its SHA-256 in base32 (16 characters).
func serviceName(cluster string) string { return "_" + clusterHash(cluster) + "._sub." + serviceType }

// clusterHash is 80 bits of the SHA-256 of cluster in base32 (16
// characters).
func clusterHash(cluster string) string {
	sum := sha256.Sum256([]byte(cluster))
	return lowerBase32.EncodeToString(sum[:10])
}

// instanceLabel returns a DNS-safe label naming id within cluster: ids are
// unique within a cluster only, and nodes of two clusters that share an
// id on one LAN must not publish one name (their records would be taken
// for one node's, by caches and by probing). An id made of lower-case
// letters, digits and hyphens (a UUID, say), of at most 56 bytes, is the
// label with "-" and the first 6 characters of the cluster's hash after
// it, so that tools like avahi-browse show it; any other id, and any id
// that itself starts with "h-", becomes "h-" and 120 bits of the SHA-256
// of cluster and id. The two forms never collide.
func instanceLabel(cluster, id string) string {
	tag := clusterHash(cluster)[:clusterTagLen]
	if isPlainLabel(id) && len(id)+1+clusterTagLen <= maxLabelLen {
		return id + "-" + tag
	}
	sum := sha256.Sum256([]byte(cluster + "\x00" + id))
	return hashedPrefix + lowerBase32.EncodeToString(sum[:15])
}

func isPlainLabel(s string) bool {
	if s == "" || len(s) > maxLabelLen || strings.HasPrefix(s, hashedPrefix) {
		return false
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// sameName compares DNS names the way DNS does: without regard to ASCII case.
func sameName(a, b string) bool { return strings.EqualFold(a, b) }
