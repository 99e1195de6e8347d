package cli

import (
	"context"
	"encoding/json"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// checkTool validates a tool input before anything connects: a bad input is
// a usage error (exit 2) with the tool's own message, the same words an
// assistant gets over MCP.
func (r *Root) checkTool(name string, in any) (json.RawMessage, error) {
	raw := tools.Marshal(in)
	if err := r.Tools.Check(name, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// callTool runs a tool through the registry with conn as every credential:
// on the command line the user picks the credential with --nkey-file, and
// the NATS server's permissions decide what it may do.
func (r *Root) callTool(ctx context.Context, name string, conn *protocol.Conn, raw json.RawMessage, progress tools.Progress) (tools.Result, error) {
	conns := map[string]*protocol.Conn{tools.DefaultCredential: conn}
	for _, c := range r.Tools.Credentials() {
		conns[c.Name] = conn
	}
	return r.Tools.Call(ctx, tools.AllGates(), name, tools.Deps{Logger: r.Logger(), Conns: conns}, raw, progress)
}
