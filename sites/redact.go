package sites

import (
	"net/url"
	"strings"
)

// redactURL returns raw with its credentials (a user and password, or a
// token, before '@') hidden, for logs and errors: "(unparseable URL)"
// when it does not parse.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if u.User == nil {
		return u.String()
	}
	if _, ok := u.User.Password(); !ok {
		u.User = url.User("xxxxx") // a token alone
		return u.String()
	}
	return u.Redacted()
}

// redactURLs is redactURL of each of urls, joined by commas.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redactURL(u)
	}
	return strings.Join(out, ",")
}

// redactError returns err's text with the credentials of every URL of
// urls hidden (errors of nats.go may quote a URL whole).
func redactError(err error, urls []string) string {
	s := err.Error()
	for _, raw := range urls {
		i := strings.Index(raw, "://")
		at := strings.LastIndex(raw, "@")
		if i < 0 || at < i {
			continue
		}
		if cred := raw[i+3 : at]; cred != "" {
			s = strings.ReplaceAll(s, cred, "xxxxx")
		}
	}
	return s
}
