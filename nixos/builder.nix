# services.homelab-deploy.builder: runs `nix build` for build requests that
# arrive over NATS, as an unprivileged, sandboxed user. The Nix daemon does
# the building; this service only evaluates flakes and asks the daemon.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.homelab-deploy.builder;
  helpers = import ./helpers.nix;
  defaults = import ./defaults.nix;
  opt = "services.homelab-deploy.builder";
  user = defaults.builderUser;
  stateDir = "/var/lib/${defaults.builderUnit}";
  cacheDir = "/var/cache/${defaults.builderUnit}";
  port = helpers.portOfAddress cfg.metrics.address;
  program = "${cfg.package}/bin/homelab-deploy";

  settingsFile = (pkgs.formats.yaml { }).generate "homelab-deploy-builder.yaml" cfg.settings;
  useSettings = cfg.settings != null;
  configPath = if useSettings then "${settingsFile}" else helpers.configFileArg cfg.configFile;

  # The user's groups as the Nix daemon sees them: its primary group, its
  # extraGroups, and groups that list it as a member.
  userGroups =
    [ user ]
    ++ (config.users.users.${user}.extraGroups or [ ])
    ++ builtins.filter (g: builtins.elem user (config.users.groups.${g}.members or [ ])) (
      builtins.attrNames (config.users.groups or { })
    );
  userAllowed = helpers.nixUserAllowed {
    inherit user;
    groups = userGroups;
    # nixpkgs' defaults.
    allowedUsers = config.nix.settings.allowed-users or [ "*" ];
    trustedUsers = config.nix.settings.trusted-users or [ "root" ];
  };
  loopbackMetrics = helpers.isLoopbackAddress cfg.metrics.address;
  natsUrlProblem = helpers.natsUrlProblem cfg.natsUrl;
in
{
  options.services.homelab-deploy.builder = (import ./options.nix { inherit lib pkgs config; }).builder;

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.configFile != null) != useSettings;
        message =
          if useSettings then
            "${opt}: set either configFile or settings, not both."
          else
            "${opt}: set configFile (a YAML file) or settings (the same as Nix); neither is set.";
      }
      {
        assertion = natsUrlProblem == null;
        message = ''
          ${opt}.natsUrl = "${cfg.natsUrl}" would be refused by the builder at start:
          ${toString natsUrlProblem}.'';
      }
      {
        assertion = !useSettings || helpers.repoProblems cfg.settings == [ ];
        message = "${opt}.settings: ${lib.concatStringsSep "; " (helpers.repoProblems cfg.settings)}.";
      }
      (helpers.trustedDeployersAssertion opt cfg.trustedDeployers)
      {
        assertion = !(builtins.isPath cfg.nkeyFile) && !(helpers.isStorePath cfg.nkeyFile);
        message = ''
          ${opt}.nkeyFile must be a string path outside the Nix store (for example
          "/run/secrets/homelab-deploy-builder.nkey" from sops-nix or agenix, owned by
          ${user}). A path literal is copied into the world-readable store, and the
          builder refuses such a seed.'';
      }
      {
        assertion = !(cfg.metrics.enable && cfg.metrics.openFirewall) || port != null;
        message = ''
          ${opt}.metrics.openFirewall needs a port in ${opt}.metrics.address
          (":9973", "0.0.0.0:9973" or "[::]:9973"); "${cfg.metrics.address}" has none.'';
      }
    ];

    warnings =
      lib.optional (!userAllowed) ''
        ${opt}: neither nix.settings.allowed-users nor nix.settings.trusted-users includes
        "${user}" (by name, "@group" or "*"), so the Nix daemon will refuse the builder's
        connections. Add "${user}" to nix.settings.allowed-users.''
      ++ lib.optional (cfg.metrics.enable && cfg.metrics.openFirewall && loopbackMetrics) ''
        ${opt}.metrics.openFirewall has no effect: metrics.address "${cfg.metrics.address}" is a
        loopback address, which nothing outside this host can reach, so no port is opened.
        Set openFirewall = false, or listen on ":${toString port}" to be scraped from outside.'';

    users.users.${user} = {
      isSystemUser = true;
      group = user;
      home = stateDir;
      description = "homelab-deploy builder";
    };
    users.groups.${user} = { };

    systemd.services.${defaults.builderUnit} = {
      description = "homelab-deploy builder (nix build on requests from NATS)";
      wantedBy = [ "multi-user.target" ];
      wants = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      # Restarted when its unit changes (new binary, new settings): builds in
      # flight are lost and their requesters see them fail, which beats
      # building with a stale configuration.

      path = [
        config.nix.package
        pkgs.git
        pkgs.openssh
      ];

      environment = lib.mkMerge [
        # Nix's own variables and the configured proxy, as nixpkgs'
        # nixos-upgrade service has them: the builder fetches flakes too.
        (lib.mapAttrs (_: lib.mkDefault) (config.nix.envVars // config.networking.proxy.envVars))
        {
          # git and Nix keep their caches (fetched flakes, eval cache) here.
          HOME = stateDir;
          XDG_CACHE_HOME = cacheDir;
          # Never try to open the store directly: the daemon builds.
          NIX_REMOTE = "daemon";
          NIX_CONFIG = lib.mkDefault "extra-experimental-features = nix-command flakes";
        }
        cfg.environment
      ];

      serviceConfig = {
        Type = "simple";
        # The seed is read directly from nkeyFile, which must be owned by this
        # user with mode 0400 (sops-nix/agenix: owner = "${user}"). Not
        # LoadCredential: for a non-root unit systemd grants access to a
        # credential through an ACL, which makes the file look group-readable
        # (mode 0440), and the binary refuses group-readable seeds.
        ExecStart = helpers.execLine program (helpers.builderArgs cfg configPath);
        Restart = "always";
        RestartSec = "5s";
        # SIGTERM to the builder only: it lets running nix builds finish
        # within its --shutdown-grace, then kills them and reports them.
        KillMode = "mixed";
        TimeoutStopSec = cfg.shutdownGrace + 60;

        User = user;
        Group = user;
        StateDirectory = defaults.builderUnit;
        StateDirectoryMode = "0700";
        CacheDirectory = defaults.builderUnit;
        CacheDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        UMask = "0077";

        # Sandboxing. `nix build` through the daemon needs: the daemon's
        # socket under /nix/var/nix (connect works on a read-only mount),
        # a writable HOME and cache, and the network for fetching flakes.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        # A refused system call fails with EPERM instead of killing the
        # process, so a tool that probes something gets an error it can handle.
        SystemCallErrorNumber = "EPERM";
      };
    };

    networking.firewall.allowedTCPPorts = lib.optional (
      cfg.metrics.enable && cfg.metrics.openFirewall && port != null && !loopbackMetrics
    ) port;
  };
}
