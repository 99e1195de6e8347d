package protocol

// Permissions is what one credential may publish and subscribe to. It is the
// single source of SPEC's permission table, used by `nats-config`, `demo` and
// the tests.
type Permissions struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

// ListenerPermissions: publish replies and discovery answers; subscribe to
// the listener's own deploy subjects and discovery.
func ListenerPermissions(subjects []string, discover string) Permissions {
	if discover == "" {
		discover = DefaultDiscoverSubject
	}
	sub := append(append([]string{}, subjects...), discover)
	return Permissions{
		Publish:   []string{DeployResponsesPrefix + ">", discover},
		Subscribe: sub,
	}
}

// BuilderPermissions: publish build replies; subscribe to build.<repo>.* for
// each configured repo.
func BuilderPermissions(repos []string) Permissions {
	sub := make([]string, 0, len(repos))
	for _, r := range repos {
		sub = append(sub, BuildRepoWildcard(r))
	}
	return Permissions{Publish: []string{BuildResponsesPrefix + ">"}, Subscribe: sub}
}

// TestDeployerPermissions: deploy to the test tier and discover hosts.
func TestDeployerPermissions() Permissions {
	return Permissions{
		Publish:   []string{"deploy.test.>", DefaultDiscoverSubject},
		Subscribe: []string{DeployResponsesPrefix + ">", DefaultDiscoverSubject},
	}
}

// AdminDeployerPermissions: deploy anywhere.
func AdminDeployerPermissions() Permissions {
	return Permissions{Publish: []string{"deploy.>"}, Subscribe: []string{"deploy.>"}}
}

// BuildClientPermissions: request builds of the given repos.
func BuildClientPermissions(repos []string) Permissions {
	pub := make([]string, 0, len(repos))
	for _, r := range repos {
		pub = append(pub, BuildRepoWildcard(r))
	}
	return Permissions{Publish: pub, Subscribe: []string{BuildResponsesPrefix + ">"}}
}
