package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresDSNEnv names an environment variable that, when set, makes
// ForTest use that existing server instead of starting a cluster; each test
// still gets its own database through NewDatabase.
const TestPostgresDSNEnv = "ODSFLOW_TEST_POSTGRES_DSN"

// ForTest starts a stack for one test (or, called from a helper that
// caches it, for a package) and stops it when the test ends.
func ForTest(t testing.TB, cfg Config) *Stack {
	t.Helper()
	if cfg.PostgresDSN == "" && !cfg.NoPostgres {
		cfg.PostgresDSN = os.Getenv(TestPostgresDSNEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting dev stack: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("stopping dev stack: %v", err)
		}
	})
	return s
}

// NewDatabase creates a fresh, empty database on the stack's server and
// returns its DSN; the database is dropped when the test ends. Tests that
// share one stack stay isolated this way.
func (s *Stack) NewDatabase(t testing.TB) string {
	t.Helper()
	if s.PostgresDSN == "" {
		t.Fatal("NewDatabase: the stack runs without PostgreSQL")
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("NewDatabase: %v", err)
	}
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.PostgresDSN)
	if err != nil {
		t.Fatalf("NewDatabase: connecting: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("NewDatabase: %v", err)
	}
	u, err := url.Parse(s.PostgresDSN)
	if err != nil {
		t.Fatalf("NewDatabase: parsing DSN: %v", err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.PostgresDSN)
		if err != nil {
			return // the server is gone with its stack: nothing to drop
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return u.String()
}
