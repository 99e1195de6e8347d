package protocol

import (
	"fmt"
	"strings"
)

// Subject prefixes and fixed subjects.
const (
	DeployResponsesPrefix  = "deploy.responses."
	BuildResponsesPrefix   = "build.responses."
	DefaultDiscoverSubject = "deploy.discover"
)

// DefaultDeploySubjects are the listener's subject templates.
func DefaultDeploySubjects() []string {
	return []string{"deploy.<tier>.<hostname>", "deploy.<tier>.all", "deploy.<tier>.role.<role>"}
}

// DeploySubject is the subject that reaches one host.
func DeploySubject(tier, hostname string) string { return "deploy." + tier + "." + hostname }

// DeployAllSubject is the subject that reaches every host of a tier.
func DeployAllSubject(tier string) string { return "deploy." + tier + ".all" }

// DeployRoleSubject is the subject that reaches the hosts of a role in a tier.
func DeployRoleSubject(tier, role string) string { return "deploy." + tier + ".role." + role }

// BuildSubject is the subject that asks for a build of target ("all" or a host).
func BuildSubject(repo, target string) string { return "build." + repo + "." + target }

// BuildRepoWildcard is the subject a builder subscribes to for one repo.
func BuildRepoWildcard(repo string) string { return "build." + repo + ".*" }

// TargetKind says what a deploy subject addresses.
type TargetKind int

// Kinds of deploy targets.
const (
	TargetHost TargetKind = iota
	TargetAll
	TargetRole
	// TargetCustom is a literal subject of another shape (listeners may
	// subscribe to custom subjects); it is treated as a group.
	TargetCustom
)

// Target is a parsed deploy subject.
type Target struct {
	Subject string
	Kind    TargetKind
	Tier    string // empty for TargetCustom
	Name    string // hostname or role
}

// Group reports whether more than one host may answer.
func (t Target) Group() bool { return t.Kind != TargetHost }

// ValidateLiteralSubject checks a subject we are about to publish on: dot
// separated tokens of letters, digits, '-' and '_', no wildcards, bounded.
func ValidateLiteralSubject(s string) error {
	if s == "" {
		return fmt.Errorf("subject is empty")
	}
	if len(s) > 255 {
		return fmt.Errorf("subject is %d characters long; at most 255 are allowed", len(s))
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || !tokenRe.MatchString(tok) {
			return fmt.Errorf("subject %q must be dot-separated tokens of letters, digits, '-' and '_' (no wildcards or spaces)", s)
		}
	}
	return nil
}

// ParseDeploySubject parses a subject a deployer publishes to. It accepts the
// three standard shapes, and other literal subjects under "deploy.<tier>."
// as custom group subjects. The second token must be a tier: a typo such as
// deploy.tset.host would otherwise go out as a custom subject that no
// listener hears and that the credential may not publish to, and the user
// would be told about permissions instead of the tier.
func ParseDeploySubject(s string) (Target, error) {
	if err := ValidateLiteralSubject(s); err != nil {
		return Target{}, err
	}
	toks := strings.Split(s, ".")
	if toks[0] != "deploy" || len(toks) < 2 {
		return Target{}, fmt.Errorf("subject %q is not a deploy subject: it must start with \"deploy.\"", s)
	}
	if toks[1] == "responses" || toks[1] == "discover" {
		return Target{}, fmt.Errorf("subject %q is reserved for replies and discovery", s)
	}
	if len(toks) < 3 {
		return Target{}, fmt.Errorf("subject %q is too short: %s", s, subjectShapes)
	}
	tier := toks[1]
	if ValidateTier(tier) != nil {
		return Target{}, fmt.Errorf("subject %q: unknown tier %q: the tiers are %s (%s)", s, tier, strings.Join(Tiers, ", "), subjectShapes)
	}
	switch {
	case len(toks) == 3 && toks[2] == "all":
		return Target{Subject: s, Kind: TargetAll, Tier: tier}, nil
	case len(toks) == 3 && toks[2] == "role":
		return Target{}, fmt.Errorf("subject %q lacks the role name: use deploy.%s.role.<role>", s, tier)
	case len(toks) == 3:
		if err := ValidateHostname(toks[2]); err != nil {
			return Target{}, err
		}
		return Target{Subject: s, Kind: TargetHost, Tier: tier, Name: toks[2]}, nil
	case len(toks) == 4 && toks[2] == "role":
		if err := ValidateRole(toks[3]); err != nil {
			return Target{}, err
		}
		return Target{Subject: s, Kind: TargetRole, Tier: tier, Name: toks[3]}, nil
	case toks[2] == "role":
		return Target{}, fmt.Errorf("subject %q: a role subject is deploy.%s.role.<role>", s, tier)
	}
	return Target{Subject: s, Kind: TargetCustom}, nil
}

// subjectShapes tells the user which deploy subjects exist.
const subjectShapes = "use deploy.<tier>.<hostname>, deploy.<tier>.all or deploy.<tier>.role.<role>"

// TemplateVars are the values substituted into listener subject templates.
type TemplateVars struct {
	Hostname, Tier, Role string
}

// ExpandSubjects expands <hostname>, <tier> and <role> in each template.
// Templates that use <role> are skipped when no role is set. Each result must
// be a literal subject; duplicates are removed, order is kept.
func ExpandSubjects(templates []string, v TemplateVars) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, tpl := range templates {
		if strings.Contains(tpl, "<role>") && v.Role == "" {
			continue
		}
		s := strings.NewReplacer("<hostname>", v.Hostname, "<tier>", v.Tier, "<role>", v.Role).Replace(tpl)
		if strings.ContainsAny(s, "<>") {
			return nil, fmt.Errorf("subject template %q has an unknown placeholder: use <hostname>, <tier> or <role>", tpl)
		}
		if err := ValidateLiteralSubject(s); err != nil {
			return nil, fmt.Errorf("subject template %q: %w", tpl, err)
		}
		if strings.HasPrefix(s, DeployResponsesPrefix) || strings.HasPrefix(s, BuildResponsesPrefix) {
			return nil, fmt.Errorf("subject template %q expands into a reply subject", tpl)
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}
