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

  # The assertion on a service's trustedDeployers (opt is the option path's
  # prefix): every entry a user public key. Wrong entries are named by
  # position, never quoted: one may be a seed.
  trustedDeployersAssertion = opt: keys: {
    assertion = builtins.all isUserPublicKey keys;
    message = ''
      ${opt}.trustedDeployers must list NKey user public keys ("U" and 55 letters A-Z or digits
      2-7, as `homelab-deploy keygen` prints them), never seeds. Entries that are not: ${
        concatStringsSep ", " (
          builtins.filter (x: x != "") (
            builtins.genList (
              i: if isUserPublicKey (builtins.elemAt keys i) then "" else "#${toString (i + 1)}"
            ) (builtins.length keys)
          )
        )
      } (not quoted: a seed is a secret).'';
  };

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
    ++ optionals (cfg.lockFile != null) [
      "--lock-file"
      cfg.lockFile
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

  # Problems of the builder's typed settings (the module system has already
  # refused unknown keys and a missing url or default_branch): the checks
  # tools/build.ParseConfig makes on repository names and URLs. Returns the
  # list of problems (empty when fine).
  repoProblems =
    settings:
    let
      repos = settings.repos;
      names = builtins.attrNames repos;
    in
    optionals (names == [ ]) [ "settings.repos is empty: the builder would have nothing to build" ]
    ++ concatMap (
      n:
      optionals (!isSubjectToken n || stringLength n > maxTokenLen) [
        "repo name \"${n}\" is not one NATS subject token (letters, digits, - and _ only, at most ${toString maxTokenLen})"
      ]
      ++ optionals (n == "responses") [
        "repo name \"responses\" is reserved (build.responses carries replies): rename it"
      ]
      ++ (
        let
          p = flakeUrlProblem repos.${n}.url;
        in
        optionals (p != null) [ "repos.${n}.url: ${p}" ]
      )
    ) names;

  # protocol.MaxTokenLen.
  maxTokenLen = 63;

  # ASCII lower case (Go's url.Parse lowers a URL's scheme).
  toLower = replaceStrings (builtins.genList (
    i: builtins.substring i 1 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
  ) 26) (builtins.genList (i: builtins.substring i 1 "abcdefghijklmnopqrstuvwxyz") 26);

  # The host and port part of a URL's authority, as Go's url.Parse reads
  # it: userinfo (up to the last '@') dropped, then "[v6]", "[v6]:port",
  # "host" or "host:port". Returns { hostname; port; } (port "" when
  # absent), or null when Go would fail to parse it (a port that is not
  # digits, a character not allowed in a host name).
  parseHostPort =
    authority:
    let
      parts = builtins.split "@" authority;
      hostport = builtins.elemAt parts (builtins.length parts - 1);
      v6 = match "[[]([^]]*)[]](:([0-9]*))?" hostport;
      plain = match "([^:]*)(:([0-9]*))?" hostport;
      hostChars = "[A-Za-z0-9._~!$&'()*+,;=<>\"%-]*";
    in
    if v6 != null then
      {
        hostname = builtins.elemAt v6 0;
        port = toString (builtins.elemAt v6 2);
      }
    else if plain != null && match hostChars (builtins.elemAt plain 0) != null then
      {
        hostname = builtins.elemAt plain 0;
        port = toString (builtins.elemAt plain 2);
      }
    else
      null;

  # Mirror of protocol.ValidateFlakeURL: null when the binary accepts the
  # flake URL, else what is wrong and what to write instead. (The binary
  # also refuses percent escapes and host names url.Parse cannot read; it
  # says so at start.)
  flakeUrlProblem =
    s:
    let
      scheme = match "([A-Za-z][A-Za-z0-9+.-]*):(.*)" s;
      rest = if scheme == null then "" else builtins.elemAt scheme 1;
      authority = match "//([^/?]*).*" rest;
      suggestion =
        if match "/.*" s != null then
          ''; for a local checkout write "git+file://${s}" (or "path:${s}")''
        else
          "";
    in
    if s == "" then
      "the flake URL is empty: give e.g. git+https://git.example.com/org/repo.git"
    else if match ".*[ \t\r\n].*" s != null then
      "flake URL \"${s}\" contains whitespace"
    else if match ".*[[:cntrl:]].*" s != null || match ":.*" s != null then
      "flake URL \"${s}\" does not parse"
    else if scheme == null then
      "flake URL \"${s}\" has no scheme: use e.g. git+https://, git+ssh://, git+file:// or path:${suggestion}"
    else if match ".*#.*" s != null then
      "flake URL \"${s}\" must not contain '#': the attribute (#<hostname>) is added by homelab-deploy"
    else if authority != null && parseHostPort (builtins.head authority) == null then
      "flake URL \"${s}\" does not parse (its host or port)"
    else
      null;

  # The schemes nats.go dials (protocol.URLSchemes).
  natsSchemes = [
    "nats"
    "tls"
    "ws"
    "wss"
  ];
  natsSchemeHint = "give host:port or nats://host:port, tls://host:port, ws://host:port or wss://host:port";

  # Mirror of protocol.ParseURLs for one URL of the comma-separated list:
  # null when fine, else the problem.
  natsUrlOneProblem =
    raw:
    let
      full = if match ".*://.*" raw != null then raw else "nats://${raw}";
      sm = match "([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)" full;
      scheme = if sm == null then "" else toLower (builtins.elemAt sm 0);
      hp = if sm == null then null else parseHostPort (builtins.elemAt sm 1);
      tail = if sm == null then "" else builtins.elemAt sm 2;
      portNum = if hp == null || hp.port == "" then null else fromJSON (toString (stripZeros hp.port));
      # fromJSON does not take leading zeros; Go's Atoi does.
      stripZeros = p: builtins.head (match "0*([0-9]+)" p);
    in
    if sm == null then
      "NATS URL \"${raw}\" does not parse: ${natsSchemeHint}"
    else if !(elem scheme natsSchemes) then
      "NATS URL \"${raw}\" has scheme ${scheme}://, which NATS does not speak: ${natsSchemeHint}"
    else if hp == null then
      "NATS URL \"${raw}\" does not parse: ${natsSchemeHint}"
    else if hp.hostname == "" then
      "NATS URL \"${raw}\" has no host: give e.g. ${scheme}://nats.example.com:4222"
    else if portNum != null && (stringLength (stripZeros hp.port) > 5 || portNum < 1 || portNum > 65535) then
      "NATS URL \"${raw}\" has port ${hp.port}: a port is 1 to 65535 (NATS listens on 4222 by default)"
    else if tail != "" && tail != "/" && match "/?[?]" tail == null then
      "NATS URL \"${raw}\" has a path or query, which NATS does not use: give only ${scheme}://host:port"
    else
      null;

  # Mirror of protocol.ParseURLs for natsUrl: null when the binary accepts
  # it, else what is wrong and what to write.
  natsUrlProblem =
    s:
    let
      trimmed = map (
        r:
        let
          m = match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" r;
        in
        if m == null then "" else builtins.head m
      ) (builtins.filter isString (builtins.split "," s));
      urls = builtins.filter (r: r != "") trimmed;
      problems = builtins.filter (p: p != null) (map natsUrlOneProblem urls);
      isWs = r: elem (toLower (builtins.head (match "([^:]*)://.*" r))) [ "ws" "wss" ];
      ws = builtins.length (builtins.filter (r: match ".*://.*" r != null && isWs r) urls);
    in
    if urls == [ ] then
      "no NATS URL given: give e.g. nats://nats.example.com:4222"
    else if problems != [ ] then
      builtins.head problems
    else if ws != 0 && ws != builtins.length urls then
      "NATS URLs \"${s}\" mix websocket (ws://, wss://) and plain (nats://, tls://) servers: a client speaks one or the other, so list only one kind"
    else
      null;

  # True for a listen address only this host can reach: localhost,
  # 127.0.0.0/8 or [::1] (also as an IPv4-mapped address).
  isLoopbackAddress =
    addr:
    let
      m = if isString addr then match "(.*):[0-9]*" addr else null;
      host = if m == null then addr else builtins.head m;
    in
    isString host
    && (
      elem (toLower host) [
        "localhost"
        "[::1]"
        "[0:0:0:0:0:0:0:1]"
      ]
      || match "(\\[::ffff:)?127\\.[0-9]+\\.[0-9]+\\.[0-9]+]?" (toLower host) != null
    );

  # Whether the Nix daemon lets `user` (primary group `group`, further
  # groups `groups`) connect, as Nix's matchUser decides it: a user is
  # allowed when trusted-users or allowed-users holds "*", the name, or
  # "@group" of one of its groups; trusted users are always allowed.
  nixUserAllowed =
    {
      user,
      groups,
      allowedUsers,
      trustedUsers,
    }:
    let
      matches = builtins.any (
        u: u == "*" || u == user || builtins.any (g: u == "@${g}") groups
      );
    in
    matches trustedUsers || matches allowedUsers;
}
