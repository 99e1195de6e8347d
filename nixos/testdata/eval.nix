# Evaluation harness for nixos/nix_test.go. Call with
#   nix-instantiate --eval --strict --json testdata/eval.nix --argstr request '<json>'
# where the JSON request is one of
#   { "what": "options" }
#   { "what": "listener" | "builder", "cfg": { ...overrides... }, "allowedUsers": [...] }
# The last form evaluates the real module file with the option defaults from
# options.nix, the overrides on top, and reports what systemd would get.
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

  # Option defaults as a nested attrset (required options left out).
  defaultsOf =
    set:
    builtins.foldl' (
      acc: name:
      let
        v = set.${name};
      in
      if isOption v then
        (if v ? default then acc // { ${name} = v.default; } else acc)
      else
        acc // { ${name} = defaultsOf v; }
    ) { } (builtins.attrNames set);

  recursiveUpdate =
    a: b:
    a
    // builtins.mapAttrs (
      n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v
    ) b;

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
      cfg = recursiveUpdate (defaultsOf (declarations bareConfig).${service}) req.cfg;
      config = stub.config {
        services.${service} = cfg;
        allowedUsers = req.allowedUsers or [ "*" ];
      };
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
    };
in
if req.what == "options" then
  flatten "" (declarations (stub.config { }))
else
  evalModule req.what
