package cli

import (
	"context"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// connFlags are the NATS connection flags every networked command has.
type connFlags struct {
	URL      string
	NKeyFile string
	CAFile   string
}

func (c *connFlags) register(fs *ff.FlagSet) {
	fs.StringVar(&c.URL, 0, "nats-url", "", "NATS server URL; several comma-separated for a cluster (required; env HOMELAB_DEPLOY_NATS_URL)")
	fs.StringVar(&c.NKeyFile, 0, "nkey-file", "", "path to the NKey seed file, mode 0600 (required; env HOMELAB_DEPLOY_NKEY_FILE)")
	fs.StringVar(&c.CAFile, 0, "nats-ca-file", "", "PEM file of CAs to trust for tls:// NATS servers (env HOMELAB_DEPLOY_NATS_CA_FILE)")
}

func (c *connFlags) env() map[string]string {
	return map[string]string{
		"nats-url":     "HOMELAB_DEPLOY_NATS_URL",
		"nkey-file":    "HOMELAB_DEPLOY_NKEY_FILE",
		"nats-ca-file": "HOMELAB_DEPLOY_NATS_CA_FILE",
	}
}

// check validates the connection flags before anything is dialled. A bad
// seed file is a local setup problem like a bad URL: every command reports
// it the same way (exit 2, nothing sent), not as a failed connection.
func (c *connFlags) check() error {
	if err := required("--nats-url (or HOMELAB_DEPLOY_NATS_URL)", c.URL, "--nkey-file (or HOMELAB_DEPLOY_NKEY_FILE)", c.NKeyFile); err != nil {
		return err
	}
	if _, err := protocol.ParseURLs(c.URL); err != nil {
		return usageError{err}
	}
	if err := protocol.CheckSeedFile(c.NKeyFile); err != nil {
		return usageError{err}
	}
	return nil
}

// connect dials NATS for a one-shot command: it fails at once when no server
// answers, then reconnects if the connection drops while waiting.
func (c *connFlags) connect(ctx context.Context, r *Root, name string) (*protocol.Conn, error) {
	return protocol.Connect(ctx, protocol.ConnectOptions{
		URLs: c.URL, NKeyFile: c.NKeyFile, CAFile: c.CAFile, Name: name, Logger: r.Logger(),
	})
}

func merge(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
