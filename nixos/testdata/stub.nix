# A stand-in for the parts of nixpkgs' lib, pkgs and config that the modules
# in ../ use, so `go test` can evaluate the real module files with a bare
# nix-instantiate and no nixpkgs. Each function keeps the shape nixpkgs gives
# it where the tests look (option records, mkIf/mkMerge/mkDefault wrappers,
# type names), and nothing more. When a module starts using another lib
# function, evaluation fails with "attribute 'x' missing" and it is added
# here.
rec {
  lib = rec {
    # Option declarations.
    mkOption = args: args // { _type = "option"; };
    mkEnableOption = name: {
      _type = "option";
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    literalMD = text: {
      _type = "literalMD";
      inherit text;
    };

    # Type records named as nixpkgs names them (types.<x>.name), with
    # nixpkgs' description and check, which eval.nix applies to definitions
    # the way the module system does.
    types = rec {
      bool = {
        name = "bool";
        description = "boolean";
        check = builtins.isBool;
      };
      str = {
        name = "str";
        description = "string";
        check = builtins.isString;
      };
      int = {
        name = "int";
        description = "signed integer";
        check = builtins.isInt;
      };
      path = {
        name = "path";
        description = "path";
        check = x: builtins.isPath x || (builtins.isString x && builtins.substring 0 1 x == "/");
      };
      package = {
        name = "package";
        description = "package";
        check = x: builtins.isAttrs x || builtins.isString x;
      };
      ints = {
        positive = {
          name = "positiveInt";
          description = "positive integer, meaning >0";
          check = x: builtins.isInt x && x > 0;
        };
        unsigned = {
          name = "unsignedInt";
          description = "unsigned integer, meaning >=0";
          check = x: builtins.isInt x && x >= 0;
        };
        between = lowest: highest: {
          name = "intBetween";
          description = "integer between ${toString lowest} and ${toString highest} (both inclusive)";
          check = x: builtins.isInt x && x >= lowest && x <= highest;
        };
      };
      enum = values: {
        name = "enum";
        inherit values;
        description = "one of ${builtins.concatStringsSep ", " (map builtins.toJSON values)}";
        check = x: builtins.elem x values;
      };
      nullOr = elem: {
        name = "nullOr";
        inherit elem;
        description = "null or ${elem.description}";
        check = x: x == null || elem.check x;
      };
      listOf = elem: {
        name = "listOf";
        inherit elem;
        description = "list of ${elem.description}";
        check = builtins.isList;
      };
      attrsOf = elem: {
        name = "attrsOf";
        inherit elem;
        description = "attribute set of ${elem.description}";
        check = builtins.isAttrs;
      };
      # A submodule given as { options = ...; } or as a function of the
      # module arguments; its options are checked like top-level ones
      # (unknown keys refused, options without default required).
      submodule = m: {
        name = "submodule";
        description = "submodule";
        check = builtins.isAttrs;
        options =
          (
            if builtins.isFunction m then
              m {
                inherit lib;
                name = "<name>";
                config = { };
              }
            else
              m
          ).options or { };
      };
    };

    # Definitions: kept as the wrappers nixpkgs makes; eval.nix unwraps them.
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkDefault = mkOverride 1000;

    mkBefore = mkOverride 500; # (really mkOrder 500; the tests only look through it)

    # Plain list and string functions.
    optional = cond: x: if cond then [ x ] else [ ];
    listToAttrs = builtins.listToAttrs;
    removeSuffix =
      suffix: str:
      let
        sl = builtins.stringLength suffix;
        l = builtins.stringLength str;
      in
      if sl <= l && builtins.substring (l - sl) sl str == suffix then builtins.substring 0 (l - sl) str else str;
    optionals = cond: xs: if cond then xs else [ ];
    concatStringsSep = builtins.concatStringsSep;
    mapAttrs = builtins.mapAttrs;
    any = builtins.any;
  };

  # Packages are strings naming them, so tests can see which one went where.
  stubPackage = name: {
    _stubPackage = true;
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    homelab-deploy = stubPackage "homelab-deploy";
    nixos-rebuild = stubPackage "nixos-rebuild";
    git = stubPackage "git";
    openssh = stubPackage "openssh";
    formats.yaml = _: {
      type = {
        name = "yaml";
        description = "YAML value";
        check = _: true;
      };
      # The real generate writes the value into the file, so a value that
      # cannot be evaluated (an option used but not defined) fails here too.
      generate =
        name: value:
        builtins.deepSeq value "/nix/store/00000000000000000000000000000000-${name}";
    };
  };

  # The NixOS configuration the modules read, with nixpkgs' defaults where
  # the overrides give nothing (allowed-users [ "*" ], trusted-users
  # [ "root" ], no proxy, no nix.envVars).
  config = overrides: {
    networking.hostName = "stub-hostname";
    networking.proxy.envVars = overrides.proxyEnvVars or { };
    nix.package = stubPackage "nix";
    nix.envVars = overrides.nixEnvVars or { };
    nix.settings.allowed-users = overrides.allowedUsers or [ "*" ];
    nix.settings.trusted-users = overrides.trustedUsers or [ "root" ];
    users.users = overrides.users or { };
    users.groups = overrides.groups or { };
    system.build = { };
    services.homelab-deploy = overrides.services or { };
  };
}
