# Defaults of services.homelab-deploy.{listener,builder}, as plain data.
#
# This file needs nothing but the Nix language: options.nix takes its
# defaults from here, and the Go tests in this directory evaluate it with a
# bare `nix-instantiate --eval` to check it against SPEC.md. Options without a
# default (required ones, or ones whose default depends on the configuration,
# such as hostname) are not listed.
{
  listener = {
    enable = false;
    role = null;
    timeout = 600;
    shutdownGrace = 30;
    # Templates, expanded by the binary at startup. A subject that contains
    # <role> is skipped when no role is set.
    deploySubjects = [
      "deploy.<tier>.<hostname>"
      "deploy.<tier>.all"
      "deploy.<tier>.role.<role>"
    ];
    discoverSubject = "deploy.discover";
    # After a switch or test: how long NATS and the health checks get before
    # the change is rolled back (0: never), and the checks.
    confirmTimeout = 120;
    healthChecks = [ ];
    # Held by a running nixos-rebuild, so that a restarted listener knows
    # about a rebuild its killed predecessor left running. /run is emptied
    # at boot, and so is a stale lock.
    lockFile = "/run/homelab-deploy/listener.lock";
    # The listener's entry in the fleet registry (a JetStream bucket): how
    # often it is rewritten (0: no entry), and the bucket's replicas if this
    # listener creates it (0: 3 on a JetStream cluster, 1 otherwise).
    fleet = {
      heartbeat = 30;
      replicas = 0;
    };
    trustedDeployers = [ ];
    environment = { };
    metrics = {
      enable = false;
      address = ":9972";
      openFirewall = false;
    };
    natsCaFile = null;
    logLevel = "info";
    extraArgs = [ ];
  };

  builder = {
    enable = false;
    configFile = null;
    settings = null;
    timeout = 1800;
    maxParallel = 2;
    shutdownGrace = 30;
    trustedDeployers = [ ];
    environment = { };
    metrics = {
      enable = false;
      address = ":9973";
      openFirewall = false;
    };
    natsCaFile = null;
    logLevel = "info";
    extraArgs = [ ];
  };

  tiers = [
    "test"
    "prod"
  ];
  logLevels = [
    "debug"
    "info"
    "warn"
    "error"
  ];

  # Names the modules create. The listener watches its own unit file and
  # exits after a switch that changed it (see internal/selfupdate).
  listenerUnit = "homelab-deploy-listener";
  builderUnit = "homelab-deploy-builder";
  builderUser = "homelab-deploy-builder";
}
