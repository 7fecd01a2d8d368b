package confluent

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const fieldOAuth = "oauth"

// oauthField is Redpanda Connect's registry `oauth` block: OAuth 1.0a.
func oauthField() *service.ConfigField {
	return service.NewObjectField(fieldOAuth,
		service.NewBoolField("enabled").Description("Whether to sign requests with OAuth 1.0a.").Default(false),
		service.NewStringField("consumer_key").Description("Identifies the client to the registry.").Default(""),
		service.NewStringField("consumer_secret").Description("The secret of the consumer key.").Default("").Secret(),
		service.NewStringField("access_token").Description("The token the client acts with.").Default(""),
		service.NewStringField("access_token_secret").Description("The secret of the access token.").Default("").Secret(),
	).Description("OAuth 1.0a against the registry: each request signed with HMAC-SHA1 (RFC 5849), in an `Authorization: OAuth …` header.").Advanced().Optional()
}

// oauth1 signs requests as RFC 5849 describes, with HMAC-SHA1.
type oauth1 struct {
	consumerKey, consumerSecret string
	token, tokenSecret          string
}

// oauthFromConf is the oauth block's signer, nil when it is off.
func oauthFromConf(conf *service.ParsedConfig) (*oauth1, error) {
	if !conf.Contains(fieldOAuth) {
		return nil, nil
	}
	o := conf.Namespace(fieldOAuth)
	if on, err := o.FieldBool("enabled"); err != nil || !on {
		return nil, err
	}
	var s oauth1
	for _, f := range []struct {
		name string
		dst  *string
	}{{"consumer_key", &s.consumerKey}, {"consumer_secret", &s.consumerSecret}, {"access_token", &s.token}, {"access_token_secret", &s.tokenSecret}} {
		v, err := o.FieldString(f.name)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	if s.consumerKey == "" {
		return nil, errors.New("oauth: consumer_key is required")
	}
	return &s, nil
}

// sign adds the Authorization header of req, made at now with nonce.
func (s *oauth1) sign(req *http.Request, now time.Time, nonce string) {
	params := map[string]string{
		"oauth_consumer_key":     s.consumerKey,
		"oauth_nonce":            nonce,
		"oauth_signature_method": "HMAC-SHA1",
		"oauth_timestamp":        strconv.FormatInt(now.Unix(), 10),
		"oauth_version":          "1.0",
	}
	if s.token != "" {
		params["oauth_token"] = s.token
	}
	params["oauth_signature"] = oauthSignature(req.Method, req.URL, params, s.consumerSecret, s.tokenSecret)
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var h strings.Builder
	h.WriteString("OAuth ")
	for i, k := range names {
		if i > 0 {
			h.WriteString(", ")
		}
		fmt.Fprintf(&h, `%s="%s"`, oauthEscape(k), oauthEscape(params[k]))
	}
	req.Header.Set("Authorization", h.String())
}

// oauthSignature is RFC 5849's HMAC-SHA1 signature (§3.4.2) of the
// request's signature base string (§3.4.1): the method, the URL without its
// query, and the oauth parameters with the query's, each encoded, sorted.
func oauthSignature(method string, u *url.URL, oauthParams map[string]string, consumerSecret, tokenSecret string) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range u.Query() {
		for _, v := range vs {
			pairs = append(pairs, pair{oauthEscape(k), oauthEscape(v)})
		}
	}
	for k, v := range oauthParams {
		pairs = append(pairs, pair{oauthEscape(k), oauthEscape(v)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	norm := make([]string, len(pairs))
	for i, p := range pairs {
		norm[i] = p.k + "=" + p.v
	}
	base := *u
	base.RawQuery, base.Fragment = "", ""
	base.Scheme, base.Host = strings.ToLower(base.Scheme), strings.ToLower(base.Host)
	if (base.Scheme == "http" && base.Port() == "80") || (base.Scheme == "https" && base.Port() == "443") {
		base.Host = base.Hostname()
	}
	text := strings.ToUpper(method) + "&" + oauthEscape(base.String()) + "&" + oauthEscape(strings.Join(norm, "&"))
	mac := hmac.New(sha1.New, []byte(oauthEscape(consumerSecret)+"&"+oauthEscape(tokenSecret)))
	mac.Write([]byte(text))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// oauthEscape is RFC 5849's percent-encoding (§3.6): every byte but the
// unreserved characters of RFC 3986.
func oauthEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// oauthNonce is a random nonce for one request.
func oauthNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
