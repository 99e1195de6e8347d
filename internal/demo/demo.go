// Package demo starts a whole homelab-deploy fleet in one process: an
// embedded NATS server configured with the authorization block nats-config
// renders, three listeners whose nixos-rebuild is simulated, and (when Nix is
// installed) a builder over the example flake. The `demo` command drives it
// with the same request code and rendering as the CLI; tests drive it the
// same way.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// Repo is the name of the demo flake's repository in the builder config.
const Repo = "demo"

// SimulatedPrefix starts every status message of the demo's listeners.
const SimulatedPrefix = "[simulated] "

// Fleet is the demo's fleet: the same description a user writes for
// `nats-config`, so the demo's permissions come from the same code.
func Fleet() *natsauth.Fleet {
	return &natsauth.Fleet{
		Hosts: map[string]natsauth.FleetHost{
			"testhost1": {Tier: "test"},
			"dns1":      {Tier: "prod", Role: "dns"},
			"web1":      {Tier: "prod"},
		},
		Builder: &natsauth.FleetBuilder{Repos: []string{Repo}},
		Deployers: natsauth.FleetDeployers{
			Test:        natsauth.FleetDeployer{Enabled: true},
			Admin:       natsauth.FleetDeployer{Enabled: true},
			BuildClient: natsauth.FleetDeployer{Enabled: true},
			MCP:         natsauth.FleetDeployer{Enabled: true},
		},
	}
}

// Options configure Start.
type Options struct {
	// Port is the NATS port on 127.0.0.1; 0 picks a free one.
	Port int
	// FallbackPort, when Port is taken, picks a free port instead of
	// failing (Fallback then says so).
	FallbackPort bool
	// RebuildTime is how long a simulated nixos-rebuild takes.
	RebuildTime time.Duration
	// Nix enables the builder over the example flake (nix must be on PATH).
	Nix bool
	// NixConfig is the NIX_CONFIG the builder's nix runs with.
	NixConfig string
	// Version is reported by the listeners.
	Version string
	// Logger receives the listeners' and builder's logs.
	Logger *slog.Logger
}

// Demo is a running demo fleet.
type Demo struct {
	// URL is the NATS server's client URL.
	URL string
	// Dir holds the keys, the server config and the flake repository; it is
	// removed by Close.
	Dir string
	// ConfigFile is the nats-server configuration (listen + authorization).
	ConfigFile string
	// Fallback is set when the requested port was taken; it says which one
	// was used instead.
	Fallback string
	// Hosts are the listeners' host names.
	Hosts []string
	// FlakeURL is the flake the listeners and the builder use.
	FlakeURL string
	// Builder is set when the builder runs.
	Builder bool

	server *server.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	conns  []*protocol.Conn
}

// SeedFile returns the seed file of a credential (natsauth.Cred* names or
// natsauth.ListenerCred(host)).
func (d *Demo) SeedFile(cred string) string {
	return natsauth.SeedPath(filepath.Join(d.Dir, "keys"), cred)
}

// KeysDir is the directory holding every credential's seed and public key.
func (d *Demo) KeysDir() string { return filepath.Join(d.Dir, "keys") }

// Simulate returns an executor that pretends to run nixos-rebuild: it waits
// for d and reports what it would have run. Nothing is executed.
func Simulate(d time.Duration) deploy.Executor {
	return func(ctx context.Context, argv []string) (string, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return "simulated: " + strings.Join(argv, " ") + " (nothing was run)", nil
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "simulated rebuild interrupted", execx.ErrTimeout
			}
			return "simulated rebuild interrupted", execx.ErrCanceled
		}
	}
}

// simulatedLines are what a simulated rebuild prints, spread over its
// time, so that the demo shows live output as a real rebuild would.
var simulatedLines = []string{
	"building the system configuration... (simulated)",
	"these 3 derivations will be built (simulated)",
	"activating the configuration... (simulated)",
}

// SimulateRebuild is Simulate with live output: it prints
// simulatedLines, evenly over d. Nothing is executed.
func SimulateRebuild(d time.Duration) deploy.RebuildFunc {
	return func(ctx context.Context, r deploy.Rebuild) (string, error) {
		step := d / time.Duration(len(simulatedLines))
		for _, line := range simulatedLines {
			t := time.NewTimer(step)
			select {
			case <-t.C:
				if r.Line != nil {
					r.Line(line)
				}
			case <-ctx.Done():
				t.Stop()
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return "simulated rebuild interrupted", execx.ErrTimeout
				}
				return "simulated rebuild interrupted", execx.ErrCanceled
			}
		}
		return "simulated: " + strings.Join(r.Argv, " ") + " (nothing was run)", nil
	}
}

// Start starts the demo fleet. Close stops it.
func Start(ctx context.Context, o Options) (_ *Demo, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RebuildTime <= 0 {
		o.RebuildTime = time.Second
	}
	dir, err := os.MkdirTemp("", "homelab-deploy-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Demo{Dir: dir, cancel: cancel}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	fleet := Fleet()
	users, _, err := natsauth.ResolveKeys(fleet.Credentials(), keys, true)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if err := d.startServer(users, o); err != nil {
		return nil, err
	}

	d.FlakeURL = "git+file://" + filepath.Join(dir, "demo-flake")
	if o.Nix {
		repo, err := prepareFlakeRepo(ctx, filepath.Join(dir, "demo-flake"))
		if err != nil {
			return nil, fmt.Errorf("demo: prepare the example flake: %w", err)
		}
		d.FlakeURL = "git+file://" + repo
		if d.Builder, err = d.startBuilder(ctx, o); err != nil {
			return nil, err
		}
	}

	d.Hosts = fleet.HostNames()
	for _, name := range d.Hosts {
		h := fleet.Hosts[name]
		if err := d.startListener(ctx, name, h, o); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// startServer writes the nats-server configuration (listen plus the block
// nats-config prints) and starts the embedded server from that file.
func (d *Demo) startServer(users []natsauth.User, o Options) error {
	port := o.Port
	if port != 0 {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			if !o.FallbackPort {
				return fmt.Errorf("demo: port %d on 127.0.0.1 is taken (another NATS server?): choose another with --port, or 0 for any free one", port)
			}
			d.Fallback = fmt.Sprintf("port %d on 127.0.0.1 is taken (another NATS server?), so the demo uses a free port instead", port)
			port = 0
		} else {
			l.Close()
		}
	}
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo: find a free port: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	conf := fmt.Sprintf("# homelab-deploy demo: written by `homelab-deploy demo`\nlisten: \"127.0.0.1:%d\"\nmax_payload: 1048576\n\n%s", port, natsauth.Render(users))
	d.ConfigFile = filepath.Join(d.Dir, "nats.conf")
	if err := os.WriteFile(d.ConfigFile, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	opts, err := server.ProcessConfigFile(d.ConfigFile)
	if err != nil {
		return fmt.Errorf("demo: the generated NATS config does not load: %w", err)
	}
	opts.NoSigs = true
	opts.NoLog = true
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("demo: NATS server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("demo: the embedded NATS server did not start on 127.0.0.1:%d", port)
	}
	d.server = s
	d.URL = s.ClientURL()
	return nil
}

// Connect opens a NATS connection with one of the demo's credentials, under
// the same connection policy as the CLI.
func (d *Demo) Connect(ctx context.Context, cred string, logger *slog.Logger) (*protocol.Conn, error) {
	c, err := protocol.Connect(ctx, protocol.ConnectOptions{
		URLs: d.URL, NKeyFile: d.SeedFile(cred), Name: "homelab-deploy demo " + cred, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

func (d *Demo) startListener(ctx context.Context, name string, h natsauth.FleetHost, o Options) error {
	conn, err := d.Connect(ctx, natsauth.ListenerCred(name), o.Logger.With("hostname", name))
	if err != nil {
		return fmt.Errorf("demo: listener %s: %w", name, err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := listener.Run(ctx, listener.Config{
			Hostname: name, Tier: h.Tier, Role: h.Role, FlakeURL: d.FlakeURL,
			Timeout: 10*o.RebuildTime + time.Minute, Rebuild: SimulateRebuild(o.RebuildTime),
			Conn: conn, Version: o.Version, Logger: o.Logger, MessagePrefix: SimulatedPrefix,
			ShutdownGrace: time.Second,
			Ready:         func(*listener.Listener) { close(ready) },
		})
		done <- err
		if err != nil {
			d.fail(fmt.Errorf("listener %s: %w", name, err))
		}
	}()
	select {
	case <-ready:
		return nil
	case err := <-done:
		return fmt.Errorf("demo: listener %s stopped at start: %v", name, err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Demo) fail(err error) {
	d.mu.Lock()
	d.errs = append(d.errs, err)
	d.mu.Unlock()
}

// Err reports errors of the agents running in the background.
func (d *Demo) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return errors.Join(d.errs...)
}

// Close stops the agents, the server, and removes the demo's directory
// (keys included).
func (d *Demo) Close() {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	d.mu.Lock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
	d.mu.Unlock()
	if d.server != nil {
		d.server.Shutdown()
		d.server.WaitForShutdown()
	}
	if d.Dir != "" {
		os.RemoveAll(d.Dir)
	}
}
