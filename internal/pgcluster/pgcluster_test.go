package pgcluster

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartQueryStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop(context.Background())
		}
	})

	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatalf("connect %s: %v", c.DSN(), err)
	}
	var db, usr string
	var one int
	if err := conn.QueryRow(ctx, "SELECT current_database(), current_user, $1::int", 1).Scan(&db, &usr, &one); err != nil {
		t.Fatalf("query: %v", err)
	}
	_ = conn.Close(ctx)
	if db != "ods" || usr != "postgres" || one != 1 {
		t.Fatalf("got db=%q user=%q one=%d, want ods postgres 1", db, usr, one)
	}

	// A wrong password must be refused: the cluster really authenticates.
	bad, err := pgx.ParseConfig(c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	bad.Password = "wrong"
	if conn, err := pgx.ConnectConfig(ctx, bad); err == nil {
		conn.Close(ctx)
		t.Fatal("connecting with a wrong password succeeded")
	}

	pid, dir, port := c.PID(), c.Dir(), c.Port()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still exists after Stop (stat err %v)", dir, err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("postmaster %d still running after Stop", pid)
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		conn.Close()
		t.Errorf("port %d still accepts connections after Stop", port)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartOnBusyPortIsClearError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Port: port})
	if err == nil {
		_ = c.Stop(ctx)
		t.Fatalf("Start on busy port %d succeeded", port)
	}
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("Start on busy port: got %v, want ErrPortInUse", err)
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir()
	if err != nil {
		t.Fatalf("FindBinDir: %v", err)
	}
	for _, bin := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(dir + "/" + bin); err != nil {
			t.Errorf("%s missing in %s: %v", bin, dir, err)
		}
	}
}
