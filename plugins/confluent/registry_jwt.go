package confluent

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redpanda-data/benthos/v4/public/service"
)

const fieldJWT = "jwt"

// jwtField is Redpanda Connect's registry `jwt` block: a token signed with
// a private key, sent as a bearer token with every request.
func jwtField() *service.ConfigField {
	return service.NewObjectField(fieldJWT,
		service.NewBoolField("enabled").Description("Whether to send a signed JWT as a bearer token.").Default(false),
		service.NewStringField("private_key_file").Description("A PEM file holding the private key that signs the token (RSA, ECDSA or Ed25519, as `signing_method` needs).").Default(""),
		service.NewStringEnumField("signing_method", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA").
			Description("The signing method.").Default("RS256"),
		service.NewAnyMapField("claims").Description("The token's claims.").Default(map[string]any{}).Example(map[string]any{"sub": "odsflow", "aud": "schema-registry"}),
		service.NewAnyMapField("headers").Description("Extra headers of the token (besides `alg` and `typ`).").Default(map[string]any{}),
	).Description("JWT authentication against the registry: the token is signed once, when the processor starts.").Advanced().Optional()
}

// signedJWT returns the bearer token of the jwt block, "" when it is off.
func signedJWT(conf *service.ParsedConfig) (string, error) {
	if !conf.Contains(fieldJWT) {
		return "", nil
	}
	j := conf.Namespace(fieldJWT)
	if on, err := j.FieldBool("enabled"); err != nil || !on {
		return "", err
	}
	keyFile, err := j.FieldString("private_key_file")
	if err != nil {
		return "", err
	}
	if keyFile == "" {
		return "", errors.New("jwt: private_key_file is required")
	}
	name, err := j.FieldString("signing_method")
	if err != nil {
		return "", err
	}
	method := jwt.GetSigningMethod(name)
	if method == nil {
		return "", fmt.Errorf("jwt: unknown signing_method %q", name)
	}
	pemBytes, err := os.ReadFile(keyFile)
	if err != nil {
		return "", fmt.Errorf("jwt: %w", err)
	}
	var key any
	switch {
	case strings.HasPrefix(name, "RS"):
		key, err = jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
	case strings.HasPrefix(name, "ES"):
		key, err = jwt.ParseECPrivateKeyFromPEM(pemBytes)
	default:
		key, err = jwt.ParseEdPrivateKeyFromPEM(pemBytes)
	}
	if err != nil {
		return "", fmt.Errorf("jwt: the key in %s is not a %s private key: %w", keyFile, name, err)
	}
	claims, err := anyMap(j, "claims")
	if err != nil {
		return "", err
	}
	headers, err := anyMap(j, "headers")
	if err != nil {
		return "", err
	}
	token := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	for k, v := range headers {
		token.Header[k] = v
	}
	signed, err := token.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("jwt: signing: %w", err)
	}
	return signed, nil
}

func anyMap(conf *service.ParsedConfig, field string) (map[string]any, error) {
	fields, err := conf.FieldAnyMap(field)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		if out[k], err = v.FieldAny(); err != nil {
			return nil, fmt.Errorf("jwt: %s.%s: %w", field, k, err)
		}
	}
	return out, nil
}
