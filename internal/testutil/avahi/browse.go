package avahi

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Entry is one line of avahi-browse --parsable: a service instance
// appearing (+), going away (-) or resolved (=) on one interface and
// protocol.
type Entry struct {
	Event    string // "+", "-" or "="
	Iface    string // the interface, ts0
	Protocol string // IPv4 or IPv6: the protocol mDNS ran over
	Name     string // the instance name, unescaped
	Type     string // the service type, _tallship._tcp
	Domain   string // local
	// Resolved entries (=) only:
	Host string   // the SRV target, as avahi shows it (no trailing dot)
	Addr string   // the address the host name resolved to
	Port int      // the SRV port
	TXT  []string // the TXT strings, in the order avahi shows them
}

func (e Entry) String() string {
	if e.Event == "=" {
		return fmt.Sprintf("=%s/%s %q %s %s:%d [%s] %q", e.Iface, e.Protocol, e.Name, e.Type, e.Host, e.Port, e.Addr, e.TXT)
	}
	return fmt.Sprintf("%s%s/%s %q %s", e.Event, e.Iface, e.Protocol, e.Name, e.Type)
}

// Browser is a running avahi-browse.
type Browser struct{ p *proc }

// Browse runs avahi-browse --parsable --resolve --no-db-lookup with args
// (a service type, --all, --terminate...) against the daemon until the
// test ends.
func (d *Daemon) Browse(t testing.TB, args ...string) *Browser {
	t.Helper()
	args = append([]string{"--parsable", "--resolve", "--no-db-lookup"}, args...)
	return &Browser{start(t, "avahi-browse "+strings.Join(args, " "), d.command("avahi-browse", args...))}
}

// Entries returns the entries avahi-browse has printed so far.
func (b *Browser) Entries() []Entry { return parseEntries(b.p.snapshot()) }

// WaitFor waits until cond holds for the entries printed so far and
// returns them; it fails t after timeout, or if avahi-browse ends first.
func (b *Browser) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Entry) bool) []Entry {
	t.Helper()
	return parseEntries(b.p.waitFor(t, timeout, what, func(lines []string) bool { return cond(parseEntries(lines)) }))
}

// parseEntries parses the lines that are entries, and skips the others
// (avahi-browse's messages on standard error).
func parseEntries(lines []string) []Entry {
	var out []Entry
	for _, l := range lines {
		if e, err := ParseEntry(l); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// ParseEntry parses one line of avahi-browse --parsable --no-db-lookup:
//
//	+;ts0;IPv4;NAME;_tallship._tcp;local
//	=;ts0;IPv4;NAME;_tallship._tcp;local;HOST.local;10.77.0.1;7946;"v=1" "c=x"
//
// where NAME has '.', '\\' and bytes other than letters, digits, '-' and
// '_' escaped (\. \\ \DDD, avahi_escape_label) and each TXT string is
// quoted with '"' and '\\' escaped by a backslash and other bytes
// outside printable ASCII as \DDD.
func ParseEntry(line string) (Entry, error) {
	f := strings.SplitN(line, ";", 10)
	if len(f) < 6 || (f[0] != "+" && f[0] != "-" && f[0] != "=") {
		return Entry{}, fmt.Errorf("avahi: not an entry: %q", line)
	}
	name, err := unescape(f[3])
	if err != nil {
		return Entry{}, fmt.Errorf("avahi: %q: name: %v", line, err)
	}
	e := Entry{Event: f[0], Iface: f[1], Protocol: f[2], Name: name, Type: f[4], Domain: f[5]}
	if e.Event != "=" {
		if len(f) != 6 {
			return Entry{}, fmt.Errorf("avahi: %q: %d fields, want 6", line, len(f))
		}
		return e, nil
	}
	if len(f) != 10 {
		return Entry{}, fmt.Errorf("avahi: %q: %d fields, want 10", line, len(f))
	}
	e.Host, e.Addr = f[6], f[7]
	if e.Port, err = strconv.Atoi(f[8]); err != nil {
		return Entry{}, fmt.Errorf("avahi: %q: port: %v", line, err)
	}
	if e.TXT, err = parseTXT(f[9]); err != nil {
		return Entry{}, fmt.Errorf("avahi: %q: TXT: %v", line, err)
	}
	return e, nil
}

// unescape undoes avahi_escape_label: \DDD (decimal) is a byte, \X is X.
func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigits(s[i+1:i+4]) {
			n, _ := strconv.Atoi(s[i+1 : i+4])
			if n > 255 {
				return "", fmt.Errorf("escape \\%s out of range", s[i+1:i+4])
			}
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("a lone backslash at the end of %q", s)
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String(), nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// parseTXT splits `"a=b" "c=d"` into its strings, undoing avahi's
// escapes.
func parseTXT(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		switch s[i] {
		case ' ':
			i++
			continue
		case '"':
		default:
			return nil, fmt.Errorf("%q: a string does not start with a quote", s)
		}
		end := i + 1
		for ; end < len(s) && s[end] != '"'; end++ {
			if s[end] == '\\' {
				end++ // the escaped byte, or the first of \DDD
			}
		}
		if end >= len(s) {
			return nil, fmt.Errorf("%q: an unterminated string", s)
		}
		str, err := unescape(s[i+1 : end])
		if err != nil {
			return nil, err
		}
		out = append(out, str)
		i = end + 1
	}
	return out, nil
}
