# Pure functions behind the NixOS modules: validation predicates, the metrics
# port, and the exact command lines of both units.
#
# Builtins only, no nixpkgs lib, so the Go tests in this directory can
# evaluate every function here with a bare `nix-instantiate --eval` and check
# the argv that systemd will run.
let
  inherit (builtins)
    concatMap
    concatStringsSep
    elem
    elemAt
    fromJSON
    isPath
    isString
    match
    replaceStrings
    stringLength
    toJSON
    ;

  defaults = import ./defaults.nix;

  optionals = cond: list: if cond then list else [ ];

  # A file that may be a path literal (config file, CA bundle): interpolating
  # a path literal copies it into the store, which is what a unit needs.
  publicFile = p: if isPath p then "${p}" else p;
in
rec {
  # One NATS subject token: letters, digits, '-' and '_'. No '.', '*', '>' or
  # whitespace, which would change which subjects a listener subscribes to.
  isSubjectToken = s: isString s && match "[A-Za-z0-9_-]+" s != null;

  # Hostnames are subject tokens that are not words the subject scheme
  # reserves (deploy.<tier>.all, deploy.<tier>.role.<role>).
  reservedHostnames = [
    "all"
    "role"
  ];
  isValidHostname = s: isSubjectToken s && !(elem s reservedHostnames);

  # An NKey user public key: "U" and 55 more base32 characters. The binary
  # checks the key's checksum too; this catches a seed (SU...) or another
  # kind of key before the unit is built.
  isUserPublicKey = s: isString s && match "U[A-Z2-7]{55}" s != null;

  # The --trusted-deployer arguments of a list of keys.
  trustedDeployerArgs = concatMap (k: [
    "--trusted-deployer"
    k
  ]);

  # The TCP port of a Go listen address (":9972", "0.0.0.0:9972",
  # "[::]:9972", "host:9972"), or null when there is none or it is out of
  # range.
  portOfAddress =
    addr:
    let
      m = if isString addr then match "([[][0-9A-Fa-f:.]*[]]|[^:]*):0*([1-9][0-9]{0,4})" addr else null;
      port = if m == null then null else fromJSON (elemAt m 1);
    in
    if port == null || port > 65535 then null else port;

  # True when a secret path points into the world-readable Nix store.
  isStorePath = p: match "/nix/store/.*" (toString p) != null;

  # Quote one argument for a systemd Exec line. systemd is not a shell: it
  # splits on whitespace, understands C-style double-quoted strings, expands
  # %-specifiers and $VARIABLES. JSON string syntax is a subset of systemd's
  # quoting; doubling '%' and '$' turns off both expansions. Same rule as
  # nixpkgs' utils.escapeSystemdExecArg, kept here so it can be tested.
  escapeExecArg = arg: replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toJSON (toString arg));

  # The whole ExecStart line: program path, then every argument quoted.
  execLine = program: args: concatStringsSep " " ([ program ] ++ map escapeExecArg args);

  # argv (after the program) of the listener for a listener config `cfg`
  # shaped like services.homelab-deploy.listener.
  listenerArgs =
    cfg:
    [
      "listener"
      "--hostname"
      cfg.hostname
      "--tier"
      cfg.tier
      "--nats-url"
      cfg.natsUrl
      # toString, never interpolation: a secret must not be copied to the store.
      "--nkey-file"
      (toString cfg.nkeyFile)
      "--flake-url"
      cfg.flakeUrl
    ]
    ++ optionals (cfg.role != null) [
      "--role"
      cfg.role
    ]
    ++ [
      "--timeout"
      (toString cfg.timeout)
      "--shutdown-grace"
      (toString cfg.shutdownGrace)
      "--confirm-timeout"
      (toString cfg.confirmTimeout)
    ]
    ++ concatMap (c: [
      "--health-check"
      c
    ]) cfg.healthChecks
    ++ concatMap (s: [
      "--deploy-subject"
      s
    ]) cfg.deploySubjects
    ++ [
      "--discover-subject"
      cfg.discoverSubject
      "--fleet-heartbeat"
      (toString cfg.fleet.heartbeat)
      "--fleet-replicas"
      (toString cfg.fleet.replicas)
      # The host's own /run/current-system, /run/booted-system and profile.
      "--fleet-system-root"
      "/"
    ]
    ++ trustedDeployerArgs cfg.trustedDeployers
    ++ optionals cfg.metrics.enable [
      "--metrics-enabled"
      "--metrics-addr"
      cfg.metrics.address
    ]
    ++ optionals (cfg.natsCaFile != null) [
      "--nats-ca-file"
      (publicFile cfg.natsCaFile)
    ]
    ++ [
      "--log-level"
      cfg.logLevel
      # journald adds timestamps and levels of its own; plain text reads best.
      "--log-format"
      "text"
      "--watch-unit-file"
      "/etc/systemd/system/${defaults.listenerUnit}.service"
    ]
    ++ cfg.extraArgs;

  # argv (after the program) of the builder; configPath is the rendered
  # settings or configFile, as a string.
  builderArgs =
    cfg: configPath:
    [
      "builder"
      "--nats-url"
      cfg.natsUrl
      "--nkey-file"
      (toString cfg.nkeyFile)
      "--config"
      configPath
      "--timeout"
      (toString cfg.timeout)
      "--max-parallel"
      (toString cfg.maxParallel)
      "--shutdown-grace"
      (toString cfg.shutdownGrace)
    ]
    ++ trustedDeployerArgs cfg.trustedDeployers
    ++ optionals cfg.metrics.enable [
      "--metrics-enabled"
      "--metrics-addr"
      cfg.metrics.address
    ]
    ++ optionals (cfg.natsCaFile != null) [
      "--nats-ca-file"
      (publicFile cfg.natsCaFile)
    ]
    ++ [
      "--log-level"
      cfg.logLevel
      "--log-format"
      "text"
    ]
    ++ cfg.extraArgs;

  # The builder's config file argument: the path literal copied to the store,
  # or the path string as given.
  configFileArg = publicFile;

  # Checks of one repos.<name> of the builder settings; returns the list of
  # problems (empty when fine).
  repoProblems =
    settings:
    let
      repos = settings.repos or { };
      names = builtins.attrNames repos;
    in
    optionals (names == [ ]) [ "settings.repos is empty: the builder would have nothing to build" ]
    ++ concatMap (
      n:
      optionals (!isSubjectToken n) [
        "repo name \"${n}\" is not one NATS subject token (letters, digits, - and _ only)"
      ]
      ++ optionals (!(isString (repos.${n}.url or null)) || stringLength repos.${n}.url == 0) [
        "repo \"${n}\" has no url"
      ]
    ) names;
}
