// Package pgcluster runs a throwaway PostgreSQL server for the dev stack and
// for integration tests: a fresh cluster from the server binaries on the
// machine, data in a temporary directory, listening on loopback TCP only.
//
// The server is a direct child process (not daemonized through pg_ctl) so that
// its owner can stop it and know it is gone: Stop asks for a fast shutdown,
// waits for the postmaster to exit (it waits for its own children first) and
// removes the directory.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configure Start. The zero value starts a cluster on a free port
// with database "ods" and user/password postgres/postgres.
type Options struct {
	// Port is the TCP port on 127.0.0.1. Zero picks a free port.
	Port int
	// Database is created after the server starts; default "ods".
	Database string
	// User is the superuser initdb creates; default "postgres".
	User string
	// Password of User; default "postgres".
	Password string
	// BinDir holds initdb and postgres; empty means FindBinDir.
	BinDir string
	// OSUser is the operating-system user the server runs as when the
	// caller is root (initdb refuses root); default "postgres".
	OSUser string
	// Durable keeps PostgreSQL's defaults (fsync on, full page writes):
	// for benchmarks that must pay what a real server pays per commit.
	// Off, the throwaway cluster skips them, which tests do not need.
	Durable bool
}

func (o *Options) setDefaults() {
	if o.Database == "" {
		o.Database = "ods"
	}
	if o.User == "" {
		o.User = "postgres"
	}
	if o.Password == "" {
		o.Password = "postgres"
	}
	if o.OSUser == "" {
		o.OSUser = "postgres"
	}
}

// Cluster is a running throwaway server. Stop it with Stop.
type Cluster struct {
	opts   Options
	dir    string // owned temp dir: data/, server.log
	port   int
	cmd    *exec.Cmd
	cred   *syscall.Credential // the server's OS user, nil: ours
	exited chan struct{}       // closed when the postmaster has been reaped
}

// ErrPortInUse reports that the requested port is taken by another process.
var ErrPortInUse = errors.New("port already in use")

// FindBinDir returns the directory holding initdb and postgres: the one on
// PATH, else the newest /usr/lib/postgresql/*/bin (Debian keeps the server
// binaries off PATH).
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries not found: no initdb on PATH or in /usr/lib/postgresql/*/bin (install them, e.g. apt-get install -y postgresql)")
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// PortFree reports whether 127.0.0.1:port can be bound right now.
func PortFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start creates a cluster in a new temporary directory, starts it and waits
// until it accepts connections and the database exists. ctx bounds the whole
// start-up; on error nothing is left running and the directory is removed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.setDefaults()
	if opts.BinDir == "" {
		d, err := FindBinDir()
		if err != nil {
			return nil, err
		}
		opts.BinDir = d
	}
	cred, owner, err := serverCredential(opts.OSUser)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "odsflow-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating postgres temp dir: %w", err)
	}
	c := &Cluster{opts: opts, dir: dir}
	if err := c.initdb(ctx, cred, owner); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}

	// With an automatic port, another process may bind the port we picked
	// between our check and the server's bind; try a few before giving up.
	attempts := 1
	if opts.Port == 0 {
		attempts = 3
	}
	for i := 0; i < attempts; i++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				break
			}
		}
		err = c.start(ctx, port, cred)
		if err == nil || !errors.Is(err, ErrPortInUse) {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := c.createDatabase(ctx); err != nil {
		_ = c.Stop(context.Background())
		return nil, err
	}
	return c, nil
}

// serverCredential returns the credential to run the server binaries with:
// none for a non-root caller, the OS user's when root.
func serverCredential(osUser string) (*syscall.Credential, *user.User, error) {
	if os.Geteuid() != 0 {
		return nil, nil, nil
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return nil, nil, fmt.Errorf("initdb refuses to run as root and OS user %q was not found (create it, e.g. useradd -r %s): %w", osUser, osUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, u, nil
}

func (c *Cluster) initdb(ctx context.Context, cred *syscall.Credential, owner *user.User) error {
	data := filepath.Join(c.dir, "data")
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.opts.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing initdb password file: %w", err)
	}
	if cred != nil {
		// The server user must reach its files inside our root-owned dir.
		if err := os.Chmod(c.dir, 0o711); err != nil {
			return fmt.Errorf("opening postgres temp dir to %s: %w", owner.Username, err)
		}
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("chown password file: %w", err)
		}
		if err := os.Mkdir(data, 0o700); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
		if err := os.Chown(data, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("chown data dir: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.opts.BinDir, "initdb"),
		"-D", data, "-U", c.opts.User, "--pwfile="+pwfile,
		"--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
		"-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w: %s", err, tail(out.String(), 2000))
	}
	_ = os.Remove(pwfile)
	return nil
}

// start runs the postmaster on port and waits until it accepts connections.
func (c *Cluster) start(ctx context.Context, port int, cred *syscall.Credential) error {
	if !PortFree(port) {
		return fmt.Errorf("postgres: 127.0.0.1:%d: %w", port, ErrPortInUse)
	}
	logPath := filepath.Join(c.dir, fmt.Sprintf("server-%d.log", port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating postgres log: %w", err)
	}
	// A throwaway cluster trades durability for speed: nothing here outlives
	// the process, and tests kill clients, never the server.
	args := []string{
		"-D", filepath.Join(c.dir, "data"),
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "max_connections=200",
	}
	if !c.opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(c.opts.BinDir, "postgres"), args...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group: a terminal's Ctrl-C reaches us, not the server, so
	// shutdown happens in order. Pdeathsig: if we die, so does the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.cmd, c.port, c.cred = cmd, port, cred
	c.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(c.exited) }()

	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := c.ping(ctx, "postgres"); err == nil {
			return nil
		}
		select {
		case <-c.exited:
			log, _ := os.ReadFile(logPath)
			if bytes.Contains(log, []byte("Address already in use")) {
				return fmt.Errorf("postgres: 127.0.0.1:%d: %w", port, ErrPortInUse)
			}
			return fmt.Errorf("postgres exited during start-up: %s", tail(string(log), 2000))
		case <-ctx.Done():
			_ = c.Stop(context.Background())
			return fmt.Errorf("waiting for postgres to accept connections: %w", ctx.Err())
		case <-deadline.C:
			_ = c.Stop(context.Background())
			return fmt.Errorf("postgres did not accept connections within 30s on 127.0.0.1:%d", port)
		case <-tick.C:
		}
	}
}

func (c *Cluster) ping(ctx context.Context, db string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsnFor(db))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func (c *Cluster) createDatabase(ctx context.Context) error {
	if c.opts.Database == "postgres" {
		return nil
	}
	conn, err := pgx.Connect(ctx, c.dsnFor("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to create database %q: %w", c.opts.Database, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.opts.Database}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %q: %w", c.opts.Database, err)
	}
	return nil
}

func (c *Cluster) dsnFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.opts.User, c.opts.Password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// DSN is the connection string of the cluster's database.
func (c *Cluster) DSN() string { return c.dsnFor(c.opts.Database) }

// AdminDSN is the connection string of the cluster's "postgres" database,
// for creating and dropping other databases.
func (c *Cluster) AdminDSN() string { return c.dsnFor("postgres") }

// Port is the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// PID is the postmaster's process id.
func (c *Cluster) PID() int { return c.cmd.Process.Pid }

// Dir is the temporary directory holding the cluster; Stop removes it.
func (c *Cluster) Dir() string { return c.dir }

// Restart shuts the server down (fast shutdown: clients are disconnected),
// leaves it down for down, and starts it again on the same port with the
// same data: for tests of clients that must outlive a database restart.
func (c *Cluster) Restart(ctx context.Context, down time.Duration) error {
	if err := c.shutdown(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	return c.start(ctx, c.port, c.cred)
}

// shutdown stops the postmaster (fast shutdown) and waits for it to exit.
func (c *Cluster) shutdown(ctx context.Context) error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	select {
	case <-c.exited:
		return nil
	default:
	}
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("stopping postgres: %w", err)
	}
	select {
	case <-c.exited:
		return nil
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		<-c.exited
		return ctx.Err()
	}
}

// Stop shuts the server down (fast shutdown: clients are disconnected),
// waits for it to exit and removes its directory. If ctx ends first, the
// server is killed. Stop is safe to call more than once.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Signal(syscall.SIGINT)
			grace := time.NewTimer(15 * time.Second)
			select {
			case <-c.exited:
			case <-ctx.Done():
				_ = c.cmd.Process.Kill()
				<-c.exited
			case <-grace.C:
				_ = c.cmd.Process.Kill()
				<-c.exited
			}
			grace.Stop()
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("removing postgres temp dir: %w", err)
	}
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
