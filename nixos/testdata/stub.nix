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

    # Type records named as nixpkgs names them (types.<x>.name).
    types = {
      bool.name = "bool";
      str.name = "str";
      int.name = "int";
      path.name = "path";
      package.name = "package";
      ints.positive.name = "positiveInt";
      ints.unsigned.name = "unsignedInt";
      enum = values: {
        name = "enum";
        inherit values;
      };
      nullOr = elem: {
        name = "nullOr";
        inherit elem;
      };
      listOf = elem: {
        name = "listOf";
        inherit elem;
      };
      attrsOf = elem: {
        name = "attrsOf";
        inherit elem;
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
      };
      generate = name: value: "/nix/store/00000000000000000000000000000000-${name}";
    };
  };

  config = overrides: {
    networking.hostName = "stub-hostname";
    nix.package = stubPackage "nix";
    nix.settings.allowed-users = overrides.allowedUsers or [ "*" ];
    system.build = { };
    services.homelab-deploy = overrides.services or { };
  };
}
