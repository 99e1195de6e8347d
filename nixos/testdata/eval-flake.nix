# Evaluates ../../flake.nix's outputs against a stand-in nixpkgs, for
# nixos/nix_test.go. buildGoModule returns its arguments, so the test sees
# exactly what the flake passes (pname, ldflags, vendorHash, the Go chosen).
#
#   goVersion:   version of the stand-in pkgs.go
#   go126:       version of pkgs.go_1_26, or "" for none
{
  goVersion ? "1.26.8",
  go126 ? "",
}:
let
  stub = import ./stub.nix;
  linux = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  darwin = [
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  systems = linux ++ darwin;

  lib = stub.lib // {
    genAttrs =
      names: f:
      builtins.listToAttrs (
        map (n: {
          name = n;
          value = f n;
        }) names
      );
    filter = builtins.filter;
    findFirst =
      pred: default: list:
      let
        hits = builtins.filter pred list;
      in
      if hits == [ ] then default else builtins.head hits;
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    elem = builtins.elem;
    optionalAttrs = cond: as: if cond then as else { };
    cleanSource = p: p;
    getExe = p: "${p.outPath}/bin/${p.meta.mainProgram}";
    licenses.mit = "mit";
    platforms.linux = linux;
    platforms.darwin = darwin;
  };

  tool = name: { inherit name; };

  mkPkgs =
    system:
    {
      inherit lib;
      stdenv.hostPlatform.system = system;
      go = tool "go" // {
        version = goVersion;
      };
      buildGoModule.override =
        { go }:
        args:
        args
        // {
          goVersion = go.version;
          outPath = "/nix/store/00000000000000000000000000000000-${args.pname}";
        };
      mkShell = args: { packages = map (p: p.name) args.packages; };
      gopls = tool "gopls";
      nats-server = tool "nats-server";
      natscli = tool "natscli";
      git = tool "git";
      nixfmt-tree = tool "nixfmt-tree";
      testers.runNixOSTest = test: { inherit test; };
    }
    // (if go126 == "" then { } else { go_1_26 = tool "go_1_26" // { version = go126; }; });

  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs systems mkPkgs;
  };

  flake = import ../../flake.nix;
  self =
    flake.outputs { inherit self nixpkgs; }
    // {
      shortRev = "abc1234";
      outPath = ../..;
    };

  pkg = self.packages.x86_64-linux.default;
  vmTest = (self.checks.x86_64-linux.vm-test.test) { inherit lib; };
  vmPkgs = mkPkgs "x86_64-linux" // {
    writeShellScriptBin = name: text: tool name // { inherit text; };
    runCommand =
      name: env: cmd:
      tool name;
    util-linux = tool "util-linux";
    curl = tool "curl";
  };
  # What each VM node configures, as far as the test looks: secrets, the
  # homelab-deploy services and the NATS users.
  vmNodes = builtins.mapAttrs (
    _: node:
    let
      c = node { pkgs = vmPkgs; };
    in
    {
      etc = builtins.mapAttrs (_: e: {
        mode = e.mode or null;
        user = e.user or null;
      }) (c.environment.etc or { });
      listener = c.services.homelab-deploy.listener or null;
      builder = c.services.homelab-deploy.builder or null;
      natsUsers = c.services.nats.settings.authorization.users or [ ];
      natsHost = c.services.nats.host or null;
    }
  ) vmTest.nodes;
in
{
  description = flake.description;
  inputs = builtins.mapAttrs (_: i: i.url) flake.inputs;
  outputs = builtins.attrNames (flake.outputs { inherit self nixpkgs; });
  systems = {
    packages = builtins.attrNames self.packages;
    apps = builtins.attrNames self.apps;
    devShells = builtins.attrNames self.devShells;
    checks = builtins.attrNames self.checks;
    formatter = builtins.attrNames self.formatter;
  };
  package = {
    inherit (pkg)
      pname
      version
      vendorHash
      ldflags
      subPackages
      doCheck
      goVersion
      ;
    mainProgram = pkg.meta.mainProgram;
    sameAsNamed = pkg == self.packages.x86_64-linux.homelab-deploy;
  };
  app = self.apps.x86_64-linux.default;
  overlayPname = (self.overlays.default (mkPkgs "x86_64-linux") { }).homelab-deploy.pname;
  nixosModules = builtins.attrNames self.nixosModules;
  devShellPackages = self.devShells.x86_64-linux.default.packages;
  checks = builtins.attrNames self.checks.x86_64-linux;
  darwinChecks = builtins.attrNames self.checks.aarch64-darwin;
  platforms = pkg.meta.platforms;
  darwinPackage = self.packages.aarch64-darwin.default.pname;
  vmTest = {
    inherit (vmTest) name;
    nodes = builtins.attrNames vmTest.nodes;
    testScriptIsString = builtins.isString vmTest.testScript;
    nodeConfigs = vmNodes;
  };
}
