package protocol

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The fleet registry (extension) is a JetStream key-value bucket in which
// each listener keeps one entry about itself under the key <tier>.<hostname>.
// The key layout puts the tier first so that what a credential may read is
// a subject permission on $KV.<bucket>.<tier>.>, and what a listener may
// write is its own key's subject. The bucket's wire shape lives here, beside
// the permissions that are derived from it; tools/fleet reads and writes it.
const (
	// FleetBucket is the bucket's name; FleetStream the JetStream stream
	// that holds it (nats.go's and natscli's KV naming, so `nats kv get`
	// reads it).
	FleetBucket = "homelab_deploy_fleet"
	FleetStream = "KV_" + FleetBucket
	// FleetKeyPrefix starts the subject of every key.
	FleetKeyPrefix = "$KV." + FleetBucket + "."
	// MaxFleetEntrySize bounds one entry, on the server (the stream's
	// max_msg_size) and in every reader. An entry is about 1 KiB.
	MaxFleetEntrySize = 16 << 10
	// FleetReplyPrefix starts the subjects on which JetStream answers the
	// registry's requests: fleet.replies.host.<hostname>.<id> for a
	// listener, fleet.replies.read.<tier>.<id> for a reader of a tier. No
	// credential may publish there; JetStream answers from inside the server.
	FleetReplyPrefix = "fleet.replies."
)

// JetStream API subjects of the bucket.
const (
	FleetStreamInfoSubject   = "$JS.API.STREAM.INFO." + FleetStream
	FleetStreamCreateSubject = "$JS.API.STREAM.CREATE." + FleetStream
	fleetConsumerCreate      = "$JS.API.CONSUMER.CREATE." + FleetStream + "."
)

// FleetKey is a host's key in the bucket.
func FleetKey(tier, hostname string) string { return tier + "." + hostname }

// FleetKeySubject is the subject a listener writes its entry to.
func FleetKeySubject(tier, hostname string) string {
	return FleetKeyPrefix + FleetKey(tier, hostname)
}

// FleetTierFilter matches the keys of one tier.
func FleetTierFilter(tier string) string { return FleetKeyPrefix + tier + ".>" }

// FleetHostReplyPrefix is where JetStream answers a listener's requests.
func FleetHostReplyPrefix(hostname string) string {
	return FleetReplyPrefix + "host." + hostname + "."
}

// FleetReadReplyPrefix is where a reader of tier receives JetStream's
// answers and the entries it reads.
func FleetReadReplyPrefix(tier string) string { return FleetReplyPrefix + "read." + tier + "." }

// FleetConsumerCreateSubject creates the ephemeral consumer named consumer
// that reads one tier. The filter is part of the subject (the JetStream API
// of nats-server 2.9 and later checks that it equals the consumer's
// filter), so the permission to publish here is the permission to read
// that tier.
func FleetConsumerCreateSubject(consumer, tier string) string {
	return fleetConsumerCreate + consumer + "." + FleetTierFilter(tier)
}

// fleetConsumerCreatePattern is the publish permission that lets a
// credential read tier.
func fleetConsumerCreatePattern(tier string) string {
	return fleetConsumerCreate + "*." + FleetTierFilter(tier)
}

// ParseFleetKeySubject splits the subject of a stored entry into tier and
// hostname, refusing anything that is not exactly $KV.<bucket>.<tier>.<host>.
func ParseFleetKeySubject(subject string) (tier, hostname string, err error) {
	rest, ok := strings.CutPrefix(subject, FleetKeyPrefix)
	if !ok {
		return "", "", fmt.Errorf("subject %q is not a key of the %s bucket", Quote64(subject), FleetBucket)
	}
	tier, hostname, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", fmt.Errorf("key %q is not <tier>.<hostname>", Quote64(rest))
	}
	if err := ValidateTier(tier); err != nil {
		return "", "", fmt.Errorf("key %q: %w", Quote64(rest), err)
	}
	if err := ValidateHostname(hostname); err != nil {
		return "", "", fmt.Errorf("key %q: %w", Quote64(rest), err)
	}
	return tier, hostname, nil
}

// Quote64 cuts s to 64 bytes for an error message.
func Quote64(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return CleanField(s[:maxQuoted]) + "…"
}

// DeliveredByJetStream reports whether a message was sent by JetStream on
// behalf of someone else rather than published by a client: a consumer's
// delivery (its reply subject is $JS.ACK.…), a direct get or a republished
// message (Nats-Stream header). JetStream delivers to any subject a
// consumer or request names, so a credential allowed to read a stored
// entry could otherwise have it delivered to a deploy subject it may not
// publish to. Listeners drop such messages.
func DeliveredByJetStream(reply string, header nats.Header) bool {
	return strings.HasPrefix(reply, "$JS.") || header.Get("Nats-Stream") != "" || header.Get("Nats-Subject") != ""
}

// FleetEntry is one listener's entry in the registry. Times are RFC 3339,
// UTC.
type FleetEntry struct {
	Hostname string   `json:"hostname"`
	Tier     string   `json:"tier"`
	Role     string   `json:"role,omitempty"`
	Subjects []string `json:"subjects"`
	Version  string   `json:"version"`
	// PublicKey is the listener's NKey public key (U…), when known.
	PublicKey string `json:"public_key,omitempty"`
	// CurrentSystem and BootedSystem are the store paths behind
	// /run/current-system and /run/booted-system.
	CurrentSystem string `json:"current_system,omitempty"`
	BootedSystem  string `json:"booted_system,omitempty"`
	// RebootRequired is true when the kernel, initrd or kernel modules of
	// the two systems differ.
	RebootRequired bool `json:"reboot_required"`
	// Generation is the NixOS system profile generation; 0 when unknown.
	Generation    int     `json:"generation,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds,omitempty"`
	// StartedAt is when the listener started.
	StartedAt string `json:"started_at"`
	// HeartbeatAt is when the listener wrote the entry; HeartbeatSeconds
	// is how often it does. A reader calls the host offline when the entry
	// is older than three heartbeats.
	HeartbeatAt      string  `json:"heartbeat_at"`
	HeartbeatSeconds float64 `json:"heartbeat_seconds"`
	// Stopped is true once the listener stopped cleanly.
	Stopped       bool           `json:"stopped"`
	RunningDeploy *RunningDeploy `json:"running_deploy,omitempty"`
	LastDeploy    *LastDeploy    `json:"last_deploy,omitempty"`
}

// RunningDeploy is the deploy a listener runs now.
type RunningDeploy struct {
	ID        string `json:"id,omitempty" jsonschema:"the request id"`
	Caller    string `json:"caller,omitempty" jsonschema:"who asked for it (the signer's public key), when known"`
	Action    Action `json:"action" jsonschema:"the nixos-rebuild action"`
	Revision  string `json:"revision" jsonschema:"the branch, tag or commit being deployed"`
	StartedAt string `json:"started_at" jsonschema:"when it started, RFC 3339 UTC"`
}

var fleetEntryShape = shapeOf(reflect.TypeFor[FleetEntry]())

// MaxFleetGeneration bounds a generation number read from the network.
const MaxFleetGeneration = 1 << 30

// DecodeFleetEntry decodes the entry stored under the key subject subject
// exactly (unknown fields are ignored, for later extensions), checks that
// it describes the host its key names (a listener may write only its own
// key, so the key is what binds an entry to a host), and cleans it.
func DecodeFleetEntry(subject string, data []byte) (FleetEntry, error) {
	tier, hostname, err := ParseFleetKeySubject(subject)
	if err != nil {
		return FleetEntry{}, err
	}
	var e FleetEntry
	if err := exactDecode(data, MaxFleetEntrySize, fleetEntryShape, false, &e); err != nil {
		return FleetEntry{}, fmt.Errorf("entry %s: malformed: %w", FleetKey(tier, hostname), err)
	}
	if e.Hostname != hostname || e.Tier != tier {
		return FleetEntry{}, fmt.Errorf("entry %s names %s in tier %s: an entry must describe the host of its key", FleetKey(tier, hostname), Quote64(e.Hostname), Quote64(e.Tier))
	}
	if e.Role != "" {
		if err := ValidateRole(e.Role); err != nil {
			return FleetEntry{}, fmt.Errorf("entry %s: %w", FleetKey(tier, hostname), err)
		}
	}
	e.clean()
	return e, nil
}

func (e *FleetEntry) clean() {
	// The subjects, version and last deploy are those of a discovery
	// answer, cleaned by the same rules.
	d := DiscoverResponse{Hostname: e.Hostname, Tier: e.Tier, Subjects: e.Subjects, Version: e.Version, LastDeploy: e.LastDeploy}
	d.clean()
	e.Subjects, e.Version, e.LastDeploy = d.Subjects, d.Version, d.LastDeploy
	if e.PublicKey != "" && !nkeys.IsValidPublicUserKey(e.PublicKey) {
		e.PublicKey = ""
	}
	e.CurrentSystem = cleanStorePath(e.CurrentSystem)
	e.BootedSystem = cleanStorePath(e.BootedSystem)
	if e.Generation < 0 || e.Generation > MaxFleetGeneration {
		e.Generation = 0
	}
	e.UptimeSeconds = cleanSeconds(e.UptimeSeconds)
	e.HeartbeatSeconds = cleanSeconds(e.HeartbeatSeconds)
	e.StartedAt = cleanTime(e.StartedAt)
	e.HeartbeatAt = cleanTime(e.HeartbeatAt)
	if r := e.RunningDeploy; r != nil {
		if ValidateAction(string(r.Action)) != nil || ValidateRevision(r.Revision) != nil {
			e.RunningDeploy = nil
		} else {
			r.ID = cleanID(r.ID)
			r.Caller = cleanCaller(r.Caller)
			r.StartedAt = cleanTime(r.StartedAt)
		}
	}
	if l := e.LastDeploy; l != nil {
		l.FinishedAt = cleanTime(l.FinishedAt)
		l.DurationSeconds = cleanSeconds(l.DurationSeconds)
	}
}

// cleanStorePath keeps a path that looks like a store path (absolute, no
// control characters, bounded) and drops anything else.
func cleanStorePath(p string) string {
	c := CleanField(p)
	if c != p || !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t\n") {
		return ""
	}
	return p
}

func cleanSeconds(s float64) float64 {
	if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) || s > 1e10 {
		return 0
	}
	return RoundSeconds(s)
}

// cleanTime keeps an RFC 3339 time and drops anything else.
func cleanTime(s string) string {
	if len(s) > 64 {
		return ""
	}
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		return ""
	}
	return s
}

func cleanID(s string) string {
	if ValidateRequestID(s) != nil {
		return ""
	}
	return s
}

func cleanCaller(s string) string {
	if !nkeys.IsValidPublicUserKey(s) {
		return ""
	}
	return s
}
