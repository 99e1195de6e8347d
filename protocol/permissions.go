package protocol

// Permissions is what one credential may publish and subscribe to. It is the
// single source of SPEC's permission table, used by `nats-config`, `demo` and
// the tests.
type Permissions struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

// ListenerPermissions: publish statuses and discovery answers on its own
// reply subjects only (deploy.responses.*.<hostname>: the server then
// vouches that an answer there comes from this host, see BoundReply);
// subscribe to the listener's own deploy subjects and discovery.
func ListenerPermissions(hostname string, subjects []string, discover string) Permissions {
	if discover == "" {
		discover = DefaultDiscoverSubject
	}
	sub := append(append([]string{}, subjects...), discover)
	return Permissions{
		Publish:   []string{BoundReply(DeployResponsesPrefix+"*", hostname), discover},
		Subscribe: sub,
	}
}

// BuilderPermissions: publish build statuses on the builder's own reply
// subjects only (build.responses.*.builder); subscribe to build.<repo>.*
// for each configured repo.
func BuilderPermissions(repos []string) Permissions {
	sub := make([]string, 0, len(repos))
	for _, r := range repos {
		sub = append(sub, BuildRepoWildcard(r))
	}
	return Permissions{Publish: []string{BoundReply(BuildResponsesPrefix+"*", BuilderToken)}, Subscribe: sub}
}

// TestDeployerPermissions: deploy to the test tier and discover hosts;
// read the test tier of the fleet registry.
func TestDeployerPermissions() Permissions {
	r := FleetReaderPermissions("test")
	return Permissions{
		Publish:   append([]string{"deploy.test.>", DefaultDiscoverSubject}, r.Publish...),
		Subscribe: append([]string{DeployResponsesPrefix + ">", DefaultDiscoverSubject}, r.Subscribe...),
	}
}

// AdminDeployerPermissions: deploy anywhere; read every tier of the fleet
// registry.
func AdminDeployerPermissions() Permissions {
	r := FleetReaderPermissions(Tiers...)
	return Permissions{Publish: append([]string{"deploy.>"}, r.Publish...), Subscribe: append([]string{"deploy.>"}, r.Subscribe...)}
}

// FleetListenerPermissions: what a listener needs of the fleet registry
// (fleet.go): write its own key and nothing else, read the bucket's
// stream info and create the bucket when it is missing, and hear
// JetStream's answers on its own reply subjects. It may not update or
// delete the stream, nor read any entry.
func FleetListenerPermissions(tier, hostname string) Permissions {
	return Permissions{
		Publish:   []string{FleetKeySubject(tier, hostname), FleetStreamInfoSubject, FleetStreamCreateSubject},
		Subscribe: []string{FleetHostReplyPrefix(hostname) + ">"},
	}
}

// FleetReaderPermissions: read the entries of the given tiers and nothing
// else. Creating a consumer is the only read; its filter, one tier, is
// part of the subject, so this is the whole binding.
func FleetReaderPermissions(tiers ...string) Permissions {
	var p Permissions
	for _, t := range tiers {
		p.Publish = append(p.Publish, fleetConsumerCreatePattern(t))
		p.Subscribe = append(p.Subscribe, FleetReadReplyPrefix(t)+">")
	}
	return p
}

// BuildClientPermissions: request builds of the given repos.
func BuildClientPermissions(repos []string) Permissions {
	pub := make([]string, 0, len(repos))
	for _, r := range repos {
		pub = append(pub, BuildRepoWildcard(r))
	}
	return Permissions{Publish: pub, Subscribe: []string{BuildResponsesPrefix + ">"}}
}
