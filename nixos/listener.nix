# services.homelab-deploy.listener: runs nixos-rebuild when a deploy request
# arrives over NATS.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.homelab-deploy.listener;
  helpers = import ./helpers.nix;
  defaults = import ./defaults.nix;
  port = helpers.portOfAddress cfg.metrics.address;
  program = "${cfg.package}/bin/homelab-deploy";
  opt = "services.homelab-deploy.listener";
  loopbackMetrics = helpers.isLoopbackAddress cfg.metrics.address;
  natsUrlProblem = helpers.natsUrlProblem cfg.natsUrl;
  flakeUrlProblem = helpers.flakeUrlProblem cfg.flakeUrl;
in
{
  options.services.homelab-deploy.listener =
    (import ./options.nix { inherit lib pkgs config; }).listener;

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = natsUrlProblem == null;
        message = ''
          ${opt}.natsUrl = "${cfg.natsUrl}" would be refused by the listener at start:
          ${toString natsUrlProblem}.'';
      }
      {
        assertion = flakeUrlProblem == null;
        message = ''
          ${opt}.flakeUrl = "${cfg.flakeUrl}" would be refused by the listener at start:
          ${toString flakeUrlProblem}.'';
      }
      {
        assertion = helpers.isValidHostname cfg.hostname;
        message = ''
          ${opt}.hostname = "${cfg.hostname}" cannot be used: it must be one NATS subject token
          (letters, digits, '-' and '_'; no dots) and not "all" or "role". By default it is
          networking.hostName; set ${opt}.hostname to the short name.'';
      }
      {
        assertion = cfg.role == null || helpers.isValidHostname cfg.role;
        message = ''
          ${opt}.role = "${toString cfg.role}" cannot be used: it must be one NATS subject token
          (letters, digits, '-' and '_'; no dots, '*' or '>') and not "all" or "role".'';
      }
      {
        assertion = cfg.lockFile == null || builtins.substring 0 1 cfg.lockFile == "/";
        message = ''
          ${opt}.lockFile = "${toString cfg.lockFile}" must be an absolute path (the default is
          "${defaults.listener.lockFile}"), or null for no rebuild lock.'';
      }
      {
        assertion = cfg.deploySubjects != [ ];
        message = "${opt}.deploySubjects is empty: the listener would receive no deployments.";
      }
      (helpers.trustedDeployersAssertion opt cfg.trustedDeployers)
      {
        assertion = !(builtins.isPath cfg.nkeyFile) && !(helpers.isStorePath cfg.nkeyFile);
        message = ''
          ${opt}.nkeyFile must be a string path outside the Nix store (for example
          "/run/secrets/homelab-deploy.nkey" from sops-nix or agenix). A path literal is
          copied into the world-readable store, and the listener refuses such a seed.'';
      }
      {
        assertion = !(cfg.metrics.enable && cfg.metrics.openFirewall) || port != null;
        message = ''
          ${opt}.metrics.openFirewall needs a port in ${opt}.metrics.address
          (":9972", "0.0.0.0:9972" or "[::]:9972"); "${cfg.metrics.address}" has none.'';
      }
    ];

    systemd.services.${defaults.listenerUnit} = {
      description = "homelab-deploy listener (NixOS deployments over NATS)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      # `nixos-rebuild switch` runs inside this unit. Restarting or stopping it
      # during activation would kill the deployment halfway; instead the
      # listener compares its own unit file and binary before and after a
      # switch and exits by itself when they changed, and Restart=always brings
      # up the new version (internal/selfupdate).
      restartIfChanged = false;
      unitConfig."X-StopOnRemoval" = false;

      path = [
        (config.system.build.nixos-rebuild or pkgs.nixos-rebuild)
        config.nix.package
        pkgs.git
        pkgs.openssh
      ];

      environment = lib.mkMerge [
        # What nixpkgs' nixos-upgrade service (system.autoUpgrade) gives
        # nixos-rebuild: Nix's own variables, root's HOME (git and Nix keep
        # their caches there) and the configured proxy, so fetching works
        # behind one.
        # mkDefault: a variable in ${opt}.environment replaces one of these.
        (lib.mapAttrs (_: lib.mkDefault) (
          config.nix.envVars // { HOME = "/root"; } // config.networking.proxy.envVars
        ))
        # Flake URLs need these; the user's environment may override.
        { NIX_CONFIG = lib.mkDefault "extra-experimental-features = nix-command flakes"; }
        cfg.environment
      ];

      serviceConfig = {
        Type = "simple";
        # Root: nixos-rebuild switches the system profile and activates it.
        # The seed file is read directly; being root, the listener can read a
        # root-owned 0400 secret, which is what sops-nix and agenix create.
        ExecStart = helpers.execLine program (helpers.listenerArgs cfg);
        Restart = "always";
        RestartSec = "5s";
        # SIGTERM goes to the listener only, not to a running nixos-rebuild:
        # the listener lets the deploy finish within its --shutdown-grace,
        # then kills it and reports it failed. systemd's SIGKILL to whatever
        # is left comes after TimeoutStopSec, a minute later.
        KillMode = "mixed";
        # No RuntimeDirectory= for the rebuild lock (lockFile): systemd would
        # remove it whenever the unit stops, restarts included, and a
        # restarted listener would lock a new file while a rebuild of its
        # predecessor still holds the old one. The listener creates the
        # directory itself; /run is emptied at boot.
        TimeoutStopSec = cfg.shutdownGrace + 60;
      };
    };

    warnings = lib.optional (cfg.metrics.enable && cfg.metrics.openFirewall && loopbackMetrics) ''
      ${opt}.metrics.openFirewall has no effect: metrics.address "${cfg.metrics.address}" is a
      loopback address, which nothing outside this host can reach, so no port is opened.
      Set openFirewall = false, or listen on ":${toString port}" to be scraped from outside.'';

    networking.firewall.allowedTCPPorts = lib.optional (
      cfg.metrics.enable && cfg.metrics.openFirewall && port != null && !loopbackMetrics
    ) port;
  };
}
