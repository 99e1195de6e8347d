package listhosts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

// Where a list comes from: the fleet registry (every host that ever
// registered, offline ones too, at once) or discovery (the hosts that
// answer now, after a quiet period).
const (
	SourceAuto      = "auto"
	SourceRegistry  = "registry"
	SourceDiscovery = "discovery"
)

// Sources are the values of the source input, in the order documented.
var Sources = []string{SourceAuto, SourceRegistry, SourceDiscovery}

// States filter hosts by whether their listener is online.
var States = []string{"online", "offline"}

// System is what the fleet registry knows of a host's NixOS system.
type System struct {
	Current        string  `json:"current,omitempty" jsonschema:"store path of the running system (/run/current-system)"`
	Booted         string  `json:"booted,omitempty" jsonschema:"store path of the booted system (/run/booted-system)"`
	RebootRequired bool    `json:"reboot_required" jsonschema:"true when the running system's kernel, initrd or kernel modules differ from the booted one's: only a reboot activates them"`
	Generation     int     `json:"generation,omitempty" jsonschema:"NixOS system profile generation"`
	UptimeSeconds  float64 `json:"uptime_seconds,omitempty" jsonschema:"the host's uptime when its entry was written"`
}

// checkFilters validates the registry-era inputs.
func (in Input) checkFilters() (role, state, source string, err error) {
	if in.Role != "" {
		if err := protocol.ValidateRole(in.Role); err != nil {
			return "", "", "", tools.Invalid("role: %v", err)
		}
	}
	if in.State != "" && !slices.Contains(States, in.State) {
		return "", "", "", tools.Invalid("state %q: give online or offline", tools.Quote(in.State))
	}
	source = in.Source
	if source == "" {
		source = SourceAuto
	}
	if !slices.Contains(Sources, source) {
		return "", "", "", tools.Invalid("source %q: give auto, registry or discovery", tools.Quote(in.Source))
	}
	return in.Role, in.State, source, nil
}

// list answers list_hosts: from the fleet registry when it can be used,
// else (or when asked to) by discovery. The result says which answered.
func list(ctx context.Context, conn *protocol.Conn, req Request, log *slog.Logger) (Result, error) {
	var why string
	if req.Source != SourceDiscovery {
		res, err := FromRegistry(ctx, conn, req)
		if err == nil {
			return res, nil
		}
		if req.Source == SourceRegistry || errors.Is(err, context.Canceled) {
			return Result{}, err
		}
		why = err.Error()
		log.Debug("fleet registry not used; discovering", "reason", err)
	}
	res, err := Discover(ctx, conn, req.Tier, req.Subject, Options{Quiet: req.Quiet, Logger: log})
	if err != nil {
		return res, err
	}
	res.Source = SourceDiscovery
	seen := fleet.Stamp(time.Now())
	for i := range res.Hosts {
		res.Hosts[i].Online, res.Hosts[i].LastSeen = true, seen
	}
	res.Hosts = filter(res.Hosts, req)
	if why != "" {
		res.Notes = append(res.Notes, "discovery, because "+why)
	}
	if req.Role != "" || req.State != "" {
		res.Message = fmt.Sprintf("%s; %d match the filter", res.Message, len(res.Hosts))
	}
	return res, nil
}

// FromRegistry lists the hosts of the fleet registry for req's tier (or
// every tier this credential may read). It fails when no tier could be
// read (no JetStream, no bucket, no permission) or no host is registered
// in any, so the caller discovers instead.
func FromRegistry(ctx context.Context, conn *protocol.Conn, req Request) (Result, error) {
	tiers := protocol.Tiers
	if req.Tier != "" {
		tiers = []string{req.Tier}
	}
	hosts, errs := fleet.Read(ctx, conn, tiers, fleet.ReadOptions{})
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if len(errs) == len(tiers) {
		return Result{}, errs[tiers[0]]
	}
	if len(hosts) == 0 {
		return Result{}, fmt.Errorf("no host is registered in the fleet registry (%s)", strings.Join(tiers, ", "))
	}
	res := Result{Tier: req.Tier, Source: SourceRegistry, Hosts: make([]Host, 0, len(hosts))}
	offline := 0
	for _, h := range hosts {
		res.Hosts = append(res.Hosts, fromEntry(h))
		if !h.Online {
			offline++
		}
	}
	for _, t := range tiers {
		if err, ok := errs[t]; ok {
			res.Notes = append(res.Notes, fmt.Sprintf("the %s tier is left out: %s", t, tierReason(err)))
		}
	}
	total := len(res.Hosts)
	res.Hosts = filter(res.Hosts, req)
	res.Message = fmt.Sprintf("%d host(s) in the fleet registry, %d online, %d offline", total, total-offline, offline)
	if req.Role != "" || req.State != "" {
		res.Message += fmt.Sprintf("; %d match the filter", len(res.Hosts))
	}
	return res, nil
}

// tierReason says briefly why a tier could not be read.
func tierReason(err error) string {
	if errors.Is(err, fleet.ErrNotPermitted) {
		return "this credential may not read it"
	}
	return err.Error()
}

func fromEntry(h fleet.Host) Host {
	out := Host{
		Hostname: h.Hostname, Tier: h.Tier, Role: h.Role, Subjects: h.Subjects, Version: h.Version,
		Busy: h.RunningDeploy != nil, LastDeploy: h.LastDeploy, RunningDeploy: h.RunningDeploy,
		Online: h.Online, LastSeen: fleet.Stamp(h.LastSeen), Stopped: h.Stopped,
		System: &System{
			Current: h.CurrentSystem, Booted: h.BootedSystem, RebootRequired: h.RebootRequired,
			Generation: h.Generation, UptimeSeconds: h.UptimeSeconds,
		},
	}
	if out.Subjects == nil {
		out.Subjects = []string{}
	}
	return out
}

// filter keeps the hosts that match req's role and state.
func filter(hosts []Host, req Request) []Host {
	out := hosts[:0]
	for _, h := range hosts {
		if req.Role != "" && h.Role != req.Role {
			continue
		}
		if req.State == "online" && !h.Online || req.State == "offline" && h.Online {
			continue
		}
		out = append(out, h)
	}
	return out
}
