// Package registry assembles every tool module into one registry. Adapters
// (CLI, MCP) take their tools from here.
package registry

import (
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
	"github.com/homelab-deploy/homelab-deploy/tools/status"
)

// New returns a registry holding every tool module.
func New() *tools.Registry {
	r := &tools.Registry{}
	r.Register(deploy.Tools()...)
	r.Register(listhosts.Tool())
	r.Register(build.Tool())
	r.Register(status.Tool())
	return r
}
