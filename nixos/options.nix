# Option declarations of services.homelab-deploy.listener and .builder.
#
# Only option-declaring functions of lib are used (mkOption, mkEnableOption,
# types, literalExpression, literalMD), so the Go tests can evaluate these
# declarations against a small stand-in lib and compare names, types and
# defaults with SPEC.md. Defaults come from defaults.nix.
{
  lib,
  pkgs,
  config,
}:
let
  inherit (lib) mkOption mkEnableOption types;
  defaults = import ./defaults.nix;

  # The package comes from the flake: its nixosModules set it (with
  # mkDefault) to the flake's own build. Imported without the flake, the
  # module looks for pkgs.homelab-deploy, which overlays.default provides.
  packageOption =
    what:
    mkOption {
      type = types.package;
      default =
        pkgs.homelab-deploy or (throw ''
          services.homelab-deploy.${what}.package is not set and pkgs has no homelab-deploy.
          Import the homelab-deploy flake's nixosModules.default (it sets the package), add its
          overlays.default to nixpkgs.overlays, or set services.homelab-deploy.${what}.package.'');
      defaultText = lib.literalMD "the homelab-deploy flake's package (`pkgs.homelab-deploy` without the flake)";
      description = "The homelab-deploy package to run.";
    };

  natsUrlOption = mkOption {
    type = types.str;
    example = "nats://nats.example.com:4222";
    description = ''
      NATS server URL. Several servers of one cluster are given
      comma-separated; `tls://` URLs enable TLS.
    '';
  };

  nkeyFileOption =
    who:
    mkOption {
      type = types.path;
      example = "/run/secrets/homelab-deploy-${who}.nkey";
      description = ''
        Path to the NKey seed file (`SU...`) of the ${who}, as a string so it
        never enters the Nix store. The file must be readable by the
        ${if who == "listener" then "root user" else "`${defaults.builderUser}` user"}
        and not by group or others (mode 0400 or 0600): the binary refuses
        it otherwise. sops-nix and agenix write secrets under /run with mode 0400.
      '';
    };

  natsCaFileOption = mkOption {
    type = types.nullOr types.path;
    default = null;
    example = "/etc/ssl/nats/ca.pem";
    description = "CA bundle that signed the NATS server's TLS certificate (`--nats-ca-file`).";
  };

  logLevelOption =
    d:
    mkOption {
      type = types.enum defaults.logLevels;
      default = d;
      description = "Log level (`--log-level`). Logs go to the journal as plain text.";
    };

  environmentOption = mkOption {
    type = types.attrsOf types.str;
    default = l.environment;
    example = {
      GIT_SSH_COMMAND = "ssh -i /run/secrets/deploy-key -o StrictHostKeyChecking=accept-new";
    };
    description = "Additional environment variables for the service.";
  };

  extraArgsOption = mkOption {
    type = types.listOf types.str;
    default = l.extraArgs;
    example = [
      "--log-level"
      "debug"
    ];
    description = "Extra command-line arguments appended to the service's command line.";
  };

  metricsOptions = d: {
    enable = mkEnableOption "the Prometheus metrics endpoint (`/metrics` and `/health`)";
    address = mkOption {
      type = types.str;
      default = d.address;
      example = "127.0.0.1${d.address}";
      description = "Listen address of the metrics HTTP server (`host:port`, `:port`, `[::]:port`).";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = d.openFirewall;
      description = "Open the metrics port (from `address`) in the firewall when metrics are enabled.";
    };
  };

  trustedDeployersOption =
    d: who:
    mkOption {
      type = types.listOf types.str;
      default = d;
      example = [ "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4" ];
      description = ''
        NKey user public keys (`U...`, as `homelab-deploy keygen` prints them)
        of the ${who} whose signed requests are carried out
        (`--trusted-deployer`). When the list is not empty, requests that are
        unsigned, badly signed, expired or signed by another key are refused
        with `unauthorized` and nothing runs. When it is empty, unsigned
        requests from older clients are accepted too.
      '';
    };

  # The builder's configuration file as tools/build.ParseConfig reads it:
  # repos.<name>.{url,default_branch}, both required, nothing else. A typed
  # submodule, so a misspelt key (defaultBranch) or a missing one fails
  # evaluation instead of the unit's start.
  builderRepoModule = {
    options = {
      url = mkOption {
        type = types.str;
        example = "git+https://git.example.com/org/nixos-servers.git";
        description = "Flake URL of the repository (no `#`: the attribute is `#<host>`).";
      };
      default_branch = mkOption {
        type = types.str;
        example = "main";
        description = "Branch built when a build request names none.";
      };
    };
  };
  builderSettingsModule = {
    options.repos = mkOption {
      type = types.attrsOf (types.submodule builderRepoModule);
      description = ''
        Repositories the builder builds, by name (`build.<name>.<host>`;
        one NATS subject token).
      '';
    };
  };
  l = defaults.listener;
  b = defaults.builder;
in
{
  listener = {
    enable = mkEnableOption "the homelab-deploy listener, which runs nixos-rebuild on deploy requests from NATS";

    package = packageOption "listener";

    hostname = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Hostname used in subject templates and in responses. One NATS subject token.";
    };

    tier = mkOption {
      type = types.enum defaults.tiers;
      example = "prod";
      description = "Deployment tier of this host.";
    };

    role = mkOption {
      type = types.nullOr types.str;
      default = l.role;
      example = "dns";
      description = "Role for role-based targeting (`deploy.<tier>.role.<role>`). One NATS subject token.";
    };

    natsUrl = natsUrlOption;

    nkeyFile = nkeyFileOption "listener";

    flakeUrl = mkOption {
      type = types.str;
      example = "git+https://git.example.com/user/nixos-configs.git";
      description = "Flake that nixos-rebuild builds; the requested revision and `#<hostname>` are added to it.";
    };

    timeout = mkOption {
      type = types.ints.positive;
      default = l.timeout;
      description = "Deployment timeout in seconds.";
    };

    shutdownGrace = mkOption {
      type = types.ints.positive;
      default = l.shutdownGrace;
      description = ''
        Seconds a stopping listener lets a running deploy finish before it
        kills it and reports it failed (`--shutdown-grace`). systemd's stop
        timeout is set to leave room for it.
      '';
    };

    deploySubjects = mkOption {
      type = types.listOf types.str;
      default = l.deploySubjects;
      description = ''
        NATS subjects to subscribe to. `<hostname>`, `<tier>` and `<role>`
        are expanded at startup; a subject containing `<role>` is skipped
        when no role is set.
      '';
    };

    discoverSubject = mkOption {
      type = types.str;
      default = l.discoverSubject;
      description = "Subject on which host discovery requests arrive.";
    };

    confirmTimeout = mkOption {
      type = types.ints.unsigned;
      default = l.confirmTimeout;
      description = ''
        Seconds after a successful `switch` or `test` within which the
        listener's NATS connection must be up again and every health check
        must pass; otherwise the listener rolls the change back on the host
        (`nixos-rebuild switch --rollback`, or the current profile activated
        again after a `test`) and reports `failed` with `rolled_back`.
        `0` turns this off. `boot` and `dry-activate` are never rolled back
        (`--confirm-timeout`).
      '';
    };

    lockFile = mkOption {
      type = types.nullOr types.str;
      default = l.lockFile;
      description = ''
        Rebuild lock (`--lock-file`): `nixos-rebuild` inherits a descriptor
        holding an flock on this file and keeps it for as long as it, or
        anything it started, runs. A listener killed mid-deploy leaves the
        rebuild running; the restarted listener refuses deploys with
        `already_running` and shows busy in discovery until the lock is
        free. The directory is created when missing. `null`: no lock.
      '';
    };

    healthChecks = mkOption {
      type = types.listOf types.str;
      default = l.healthChecks;
      example = [
        "systemctl is-active sshd.service"
        "timeout=10s curl -fsS http://127.0.0.1:8080/health"
      ];
      description = ''
        Commands that must exit 0 after a `switch` or `test` (`--health-check`).
        Each is `[timeout=DURATION] PROGRAM [ARG...]`, run without a shell;
        words may be quoted with `'...'` or `"..."`. A failing check is retried
        until `confirmTimeout` runs out. Each run has its own timeout
        (default 30 s) and is killed with its process group.
      '';
    };

    fleet = {
      heartbeat = mkOption {
        type = types.ints.unsigned;
        default = l.fleet.heartbeat;
        description = ''
          Seconds between two writes of this host's entry in the fleet
          registry, a JetStream key-value bucket on the NATS server, when
          nothing changed (`--fleet-heartbeat`); a deploy is written at once.
          Readers (`list-hosts`, group deploys) call the host offline after
          three. `0` writes no entry. Without JetStream on the server the
          listener writes nothing and discovery is used instead.
        '';
      };
      replicas = mkOption {
        type = types.ints.unsigned;
        default = l.fleet.replicas;
        description = ''
          Replicas of the fleet registry bucket if this listener is the one
          that creates it (`--fleet-replicas`); `0` means three on a
          JetStream cluster and one on a single server.
        '';
      };
    };

    trustedDeployers = trustedDeployersOption l.trustedDeployers "deployers";

    environment = environmentOption;

    metrics = metricsOptions l.metrics;

    natsCaFile = natsCaFileOption;

    logLevel = logLevelOption l.logLevel;

    extraArgs = extraArgsOption;
  };

  builder = {
    enable = mkEnableOption "the homelab-deploy builder, which runs nix build on build requests from NATS";

    package = packageOption "builder";

    natsUrl = natsUrlOption;

    nkeyFile = nkeyFileOption "builder";

    configFile = mkOption {
      type = types.nullOr types.path;
      default = b.configFile;
      example = "/etc/homelab-deploy/builder.yaml";
      description = ''
        Builder configuration file (YAML, a `repos` map). Exactly one of
        `configFile` and `settings` must be set.
      '';
    };

    settings = mkOption {
      type = types.nullOr (types.submodule builderSettingsModule);
      default = b.settings;
      example = {
        repos.nixos-servers = {
          url = "git+https://git.example.com/org/nixos-servers.git";
          default_branch = "master";
        };
      };
      description = ''
        Builder configuration as Nix, rendered to YAML. An alternative to
        `configFile`; exactly one of them must be set. Each repository
        needs `url` and `default_branch` (snake case, as in the YAML
        file); other keys are refused.
      '';
    };

    timeout = mkOption {
      type = types.ints.positive;
      default = b.timeout;
      description = "Build timeout per host in seconds.";
    };

    maxParallel = mkOption {
      type = types.ints.positive;
      default = b.maxParallel;
      description = "How many `nix build`s run at the same time on the builder, across all repositories (`--max-parallel`).";
    };

    trustedDeployers = trustedDeployersOption b.trustedDeployers "build clients";

    shutdownGrace = mkOption {
      type = types.ints.positive;
      default = b.shutdownGrace;
      description = ''
        Seconds a stopping builder lets running builds finish before it kills
        them and reports them failed (`--shutdown-grace`). systemd's stop
        timeout is set to leave room for it.
      '';
    };

    environment = environmentOption;

    metrics = metricsOptions b.metrics;

    natsCaFile = natsCaFileOption;

    logLevel = logLevelOption b.logLevel;

    extraArgs = extraArgsOption;
  };
}
