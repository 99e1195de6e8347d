# Evaluation harness for nixos/nix_test.go. Call with
#   nix-instantiate --eval --strict --json testdata/eval.nix --argstr request '<json>'
# where the JSON request is one of
#   { "what": "options" }
#   { "what": "listener" | "builder", "cfg": { ...definitions... }, "system": { ... } }
# The last form evaluates the real module file with cfg checked against the
# option declarations of options.nix the way nixpkgs' module system checks
# definitions (unknown options and wrong types refused, options without a
# default required when used, submodules alike), and reports what systemd
# would get. "system" sets the rest of the NixOS configuration the modules
# read (see stub.config: allowedUsers, trustedUsers, users, groups,
# nixEnvVars, proxyEnvVars); "allowedUsers" at the top is short for it.
{ request }:
let
  req = builtins.fromJSON request;
  stub = import ./stub.nix;
  inherit (stub) lib pkgs;

  isOption = v: builtins.isAttrs v && (v._type or "") == "option";

  describeType =
    t:
    if t.name == "enum" then
      "enum [${builtins.concatStringsSep " " t.values}]"
    else if t ? elem then
      "${t.name} ${describeType t.elem}"
    else
      t.name;

  describeDefault =
    d: if builtins.isAttrs d && d ? _stubPackage then "<package ${d.name}>" else d;

  # { "listener.metrics.enable" = { type; hasDefault; default; }; ... }
  flatten =
    prefix: set:
    builtins.foldl' (
      acc: name:
      let
        v = set.${name};
        path = if prefix == "" then name else "${prefix}.${name}";
      in
      acc
      // (
        if isOption v then
          {
            ${path} = {
              type = describeType v.type;
              hasDefault = v ? default;
              default = if v ? default then describeDefault v.default else null;
              hasDescription = (v.description or "") != "";
            };
          }
        else
          flatten path v
      )
    ) { } (builtins.attrNames set);

  declarations = config: import ../options.nix { inherit lib pkgs config; };

  # Option paths as nixpkgs' showOption prints them: a name that is not an
  # identifier is quoted.
  showPath =
    path: n: "${path}.${if builtins.match "[A-Za-z_][A-Za-z0-9_'-]*" n != null then n else builtins.toJSON n}";
  definitionFile = "<the test's configuration>";

  # Merge one definition (or none) into a set of declarations, with the
  # module system's errors (lib/modules.nix, lib/types.nix).
  mergeDecls =
    path: decls: defs:
    let
      unknown = builtins.filter (n: !(decls ? ${n})) (builtins.attrNames defs);
      first = builtins.head unknown;
    in
    if unknown != [ ] then
      throw "The option `${showPath path first}' does not exist. Definition values:\n- In `${definitionFile}': ${builtins.toJSON defs.${first}}"
    else
      builtins.mapAttrs (
        n: d:
        if isOption d then
          mergeOption (showPath path n) d defs.${n} or null (defs ? ${n})
        else
          mergeDecls (showPath path n) d (defs.${n} or { })
      ) decls;

  mergeOption =
    loc: opt: def: defined:
    if defined then
      checkValue loc opt.type def
    else if opt ? default then
      opt.default
    else
      throw "The option `${loc}' was accessed but has no value defined. Try setting the option.";

  checkValue =
    loc: type: v:
    if !(type.check or (_: true)) v then
      throw "A definition for option `${loc}' is not of type `${type.description}'. Definition values:\n- In `${definitionFile}': ${builtins.toJSON v}"
    else if type.name == "submodule" then
      mergeDecls loc type.options v
    else if type.name == "nullOr" then
      (if v == null then null else checkValue loc type.elem v)
    else if type.name == "attrsOf" then
      builtins.mapAttrs (n: checkValue (showPath loc n) type.elem) v
    else if type.name == "listOf" then
      map (checkValue "${loc}.*" type.elem) v
    else
      v;

  isOverride = v: builtins.isAttrs v && (v._type or "") == "override";
  # Merge attrset definitions the way the module system would for these
  # simple cases: a plain definition beats an mkDefault one.
  resolve =
    v:
    if builtins.isAttrs v && (v._type or "") == "merge" then
      builtins.zipAttrsWith (
        _: vals:
        let
          strong = builtins.filter (x: !isOverride x) vals;
        in
        if strong != [ ] then builtins.head strong else (builtins.head vals).content
      ) (map resolve v.contents)
    else
      v;

  packageName = p: if builtins.isAttrs p && p ? _stubPackage then p.name else toString p;

  evalModule =
    service:
    let
      bareConfig = stub.config { };
      cfg = mergeDecls "services.homelab-deploy.${service}" (declarations bareConfig).${service} req.cfg;
      system = (req.system or { }) // (if req ? allowedUsers then { inherit (req) allowedUsers; } else { });
      config = stub.config (system // { services.${service} = cfg; });
      module = import (../. + "/${service}.nix") { inherit config lib pkgs; };
      enabled = module.config.condition;
      c = module.config.content;
      unitName = builtins.head (builtins.attrNames c.systemd.services);
      unit = c.systemd.services.${unitName};
    in
    if !enabled then
      { inherit enabled; }
    else
    {
      inherit enabled unitName;
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
      warnings = c.warnings or [ ];
      execStart = unit.serviceConfig.ExecStart;
      serviceConfig = unit.serviceConfig;
      restartIfChanged = unit.restartIfChanged or true;
      unitConfig = unit.unitConfig or { };
      wants = unit.wants or [ ];
      after = unit.after or [ ];
      wantedBy = unit.wantedBy or [ ];
      path = map packageName unit.path;
      environment = resolve unit.environment;
      firewallPorts = c.networking.firewall.allowedTCPPorts;
      users = builtins.attrNames (c.users.users or { });
      # What the builder writes to its YAML file (cfg.settings as the module
      # system merged it).
      settings = if service == "builder" then cfg.settings else null;
    };
in
if req.what == "options" then
  flatten "" (declarations (stub.config { }))
else
  evalModule req.what
